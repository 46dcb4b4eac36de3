"""Wall time of one command, appended to a log: the README's per-stage demo times.

The Makefile runs each stage of ``make demo`` behind ``$(STAGE)``, empty by default, so

    make demo STAGE=".venv/bin/python -m benchmarks.stage_time --log demo-times.txt"

runs the same five commands and leaves one line per stage (``13.1 s rc=0: sadc data synth ...``)
in demo-times.txt, with the machine line first. The command's exit status is passed on.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, required=True, help="file the timing line is appended to")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command to run and time")
    args = ap.parse_args(argv)
    if not args.command:
        ap.error("no command to time")
    if not args.log.exists():
        from benchmarks.common import machine_line

        args.log.write_text(machine_line() + "\n")
    start = time.perf_counter()
    try:
        rc = subprocess.call(args.command)
    except OSError as err:  # not found, not executable: one line, as for any usage error
        ap.error(f"cannot run {args.command[0]}: {err.strerror}; check the command's path")
    line = f"{time.perf_counter() - start:.1f} s rc={rc}: {shlex.join(args.command)}"
    with args.log.open("a") as f:
        f.write(line + "\n")
    print(line, file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

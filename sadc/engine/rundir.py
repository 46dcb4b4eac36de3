"""Run directories: never overwritten silently; resumed on request."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sadc.artefacts.files import remove_stale_temp_files
from sadc.errors import SadcError

LOCK = ".lock"


def next_free_dir(base: Path) -> Path:
    """``base`` if it is free (absent or empty), else ``base2``, ``base3``... (as Ultralytics names runs)."""
    if not base.exists() or (base.is_dir() and not any(p.name != LOCK for p in base.iterdir())):
        return base
    stem = re.sub(r"\d+$", "", base.name) or base.name
    n = 2
    while True:
        cand = base.with_name(f"{stem}{n}")
        if not cand.exists():
            return cand
        n += 1


def prepare_run_dir(base: Path, resume: bool) -> tuple[Path, Path | None]:
    """The run directory to use and the checkpoint to resume from (or None).

    resume=True continues ``base`` from its last.pt when there is one (and starts fresh
    in ``base`` when there is none); resume=False never touches an existing run.
    """
    if resume:
        last = base / "last.pt"
        if last.is_file():
            remove_stale_temp_files(base)  # leftovers of a save killed mid-write; last.pt itself is whole
            return base, last
        others = sorted(p.name for p in base.glob("*.pt")) if base.is_dir() else []
        if others:  # starting fresh here would overwrite them
            raise SadcError(
                f"{base}: --resume needs {last.name}, but the run has only {', '.join(others)}; drop --resume to "
                f"start a new run (in {next_free_dir(base)}), or move {base} away"
            )
        return base, None
    run_dir = next_free_dir(base)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SadcError(f"{run_dir}: cannot create run directory ({err.strerror}); set `output:` to a writable folder") from None
    return run_dir, None


@contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """This process alone writes ``run_dir`` while the block runs (an flock on run_dir/.lock).

    A second `sadc train/distill` on the same run (two terminals, two `make demo`s, a
    parallel ablation) stops with one line instead of both writing last.pt. The OS drops
    the lock when the process ends, even on kill -9, so a crash never leaves it stale.
    Where fcntl does not exist (Windows) runs are not locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    f = (run_dir / LOCK).open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise SadcError(
            f"{run_dir}: another sadc process{by} is writing this run; wait for it to finish, or give this one "
            "another name= or output="
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


class MetricsLog:
    """metrics.jsonl: one JSON object per line; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        if enabled and resume_step is not None and path.is_file():
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

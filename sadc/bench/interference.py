"""Is the machine quiet enough for the latency numbers to mean something?

A bench on a shared machine can be 30x slower than on a quiet one and look just as
confident. :class:`InterferenceMonitor` watches two things while ``sadc bench`` runs:

- the **CPU use of other processes** against the core count, before the first artefact
  and after the last: busy cores over a 0.5 s sample of ``/proc/stat`` while the bench
  sleeps (so it is others' use alone, now). The 1-minute load average, the fallback
  where ``/proc/stat`` is missing, lags by up to a minute: right after a training run
  in the same pipeline (``make demo``) it still counts that run;
- a **reference matmul** (fp32 [512, 512] @ [512, 512], median of 15 calls, on the
  bench's threads) timed before the first artefact and after each artefact: the
  direct measure. If the same work takes a different time, the machine's speed
  changed during the run, and latencies of artefacts measured at different moments
  are not comparable.

The verdict is ``unreliable`` when either rule fires:

1. a reference time is more than ``SLOWDOWN`` = 1.5x (or less than 1/1.5 of) the
   first: on a quiet 2-core EPYC a median-of-15 matmul repeats within ~30% (turbo,
   cache and the hypervisor's neighbours), while another process sharing our cores
   makes it 2x or worse. 50% sits above the noise and below the harm.
2. others' busy cores plus the bench's threads exceed ``cores + LOAD_MARGIN`` (0.5):
   more runnable threads than cores means someone waits, which on a bench machine is
   us. Both samples are taken while the bench is idle, so its own threads are added.

Every number is reported (bench.json ``interference``) with the rule that fired, so
a reader can judge; ``--repeat N`` (interleaved rounds, median of medians) keeps
ratios between artefacts meaningful when the absolute numbers are not.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SLOWDOWN = 1.5
LOAD_MARGIN = 0.5
REFERENCE_SIZE = 512  # ~3 ms of work: long enough that timer and cache noise stay well under SLOWDOWN
REFERENCE_CALLS = 15


def reference_matmul_s(clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``REFERENCE_CALLS`` fp32 [512, 512] @ [512, 512] matmuls (after three untimed calls)."""
    import torch

    a = torch.ones(REFERENCE_SIZE, REFERENCE_SIZE)
    for _ in range(3):  # untimed: allocation, kernel choice, clocks ramping up
        a @ a
    times = []
    for _ in range(REFERENCE_CALLS):
        start = clock()
        a @ a
        times.append(clock() - start)
    return statistics.median(times)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def others_busy_cores(sample_s: float = 0.5, cores: int | None = None) -> float | None:
    """Cores kept busy by other processes now: a ``sample_s`` sample of ``/proc/stat`` while we sleep.

    Falls back to the 1-minute load average (which lags) without ``/proc/stat``; None
    where neither exists.
    """
    before = _cpu_times()
    if before is None:
        try:
            return os.getloadavg()[0]
        except (OSError, AttributeError):  # Windows has no load average
            return None
    time.sleep(sample_s)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (cores or os.cpu_count() or 1)


@dataclass
class Probe:
    """The seam between the monitor and the machine: tests pass fakes, ``sadc bench`` the defaults."""

    loadavg: Callable[[], float | None] = others_busy_cores  # others' busy cores now (see the module doc)
    cores: Callable[[], int | None] = os.cpu_count
    reference_s: Callable[[], float] = reference_matmul_s


@dataclass
class InterferenceMonitor:
    """Load before/after and reference matmul times of one bench run; :meth:`verdict` says if it was quiet.

    Call :meth:`start` before the first artefact, :meth:`check` after each one (``label``
    names it, with the round under ``--repeat``), :meth:`finish` after the last.
    """

    threads: int
    probe: Probe = field(default_factory=Probe)
    cores: int | None = None
    load_before: float | None = None
    load_after: float | None = None
    reference_ms: list[tuple[str, float]] = field(default_factory=list)  # (after what, ms); the first is "start"

    def start(self) -> None:
        self.cores = self.probe.cores()
        self.load_before = self.probe.loadavg()
        self.reference_ms.append(("start", self.probe.reference_s() * 1e3))

    def check(self, label: str) -> None:
        self.reference_ms.append((label, self.probe.reference_s() * 1e3))

    def finish(self) -> None:
        self.load_after = self.probe.loadavg()

    def reasons(self) -> list[str]:
        """Why the numbers are unreliable (empty: they are not known to be)."""
        out = []
        if self.reference_ms:
            first = self.reference_ms[0][1]
            for label, ms in self.reference_ms[1:]:
                ratio = ms / first if first > 0 else 1.0
                if ratio > SLOWDOWN or ratio < 1 / SLOWDOWN:
                    out.append(f"reference matmul {ratio:.2f}x its first time after {label}")
                    break
        if self.cores:
            limit = self.cores + LOAD_MARGIN
            if self.load_before is not None and self.load_before + self.threads > limit:
                out.append(f"load {self.load_before:.2f} before the run + {self.threads} bench threads > {self.cores} cores")
            if self.load_after is not None and self.load_after + self.threads > limit:
                out.append(f"load {self.load_after:.2f} after the run + {self.threads} bench threads > {self.cores} cores")
        return out

    def to_json(self) -> dict:
        first = self.reference_ms[0][1] if self.reference_ms else None
        reasons = self.reasons()
        return {
            "reliable": not reasons,
            "reasons": reasons,
            "cores": self.cores,
            "threads": self.threads,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "reference_ms": [
                {"after": label, "ms": ms, "ratio": ms / first if first else None} for label, ms in self.reference_ms
            ],
            "rules": f"unreliable when the reference matmul ({REFERENCE_SIZE}x{REFERENCE_SIZE} fp32, median of "
            f"{REFERENCE_CALLS}) after an artefact is outside 1/{SLOWDOWN:g}..{SLOWDOWN:g}x its first time, or the "
            f"other processes' busy cores (+ bench threads), before or after, exceed cores + {LOAD_MARGIN:g}",
        }


def summary_line(interference: dict | None) -> str | None:
    """One line for tables and bench.md: quiet, or UNRELIABLE with the reasons."""
    if not interference:
        return None
    refs = interference["reference_ms"]
    worst = max((r["ratio"] for r in refs[1:] if r["ratio"] is not None), default=1.0, key=lambda x: max(x, 1 / x))
    load = interference["load_before"]
    facts = f"reference matmul up to {worst:.2f}x its first time"
    if load is not None:
        facts = f"load {load:.2f} on {interference['cores']} cores before, {facts}"
    if interference["reliable"]:
        return f"machine quiet during the run ({facts})"
    return f"UNRELIABLE: the machine was busy ({'; '.join(interference['reasons'])}); compare ratios, rerun with --repeat"

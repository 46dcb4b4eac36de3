"""Signals a training run turns into a checkpoint instead of lost work."""

from __future__ import annotations

import contextlib
import signal

from sadc.data.loaders import STOP_SIGNALS


@contextlib.contextmanager
def graceful_interrupt():
    """Turn the first of :data:`~sadc.data.loaders.STOP_SIGNALS` (SIGINT, SIGTERM, SIGUSR1)
    into a flag the loop checks between steps.

    Yields a dict whose ``"signal"`` is None until a signal arrives. A second signal
    interrupts at once. Outside the main thread (e.g. some test runners) signals cannot
    be caught and the flag simply never sets.
    """
    state: dict[str, int | None] = {"signal": None}

    def handler(signum, frame):
        if state["signal"] is not None:
            raise KeyboardInterrupt
        state["signal"] = signum

    try:
        old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:
        old = {}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)

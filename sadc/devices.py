"""Devices as people type them: the one parser every ``--device`` flag and ``train.device`` use."""

from __future__ import annotations

import re

from sadc.errors import SadcError

DEVICE_HELP = "auto, cpu, cuda, cuda:N or N (= cuda:N)"


def parse_device(text: str | int, flag: str = "--device") -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a bare GPU index ``N`` -> ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Case and surrounding spaces are ignored. Raises one-line :class:`SadcError` naming
    ``flag`` otherwise. Nothing is imported or probed: whether the device exists here is
    :func:`sadc.engine.machine.check_device`'s question.
    """
    name = str(text).strip().lower()
    if re.fullmatch(r"\d+", name):
        return f"cuda:{int(name)}"
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        return name
    raise SadcError(f"{flag} {text}: not a device; use {DEVICE_HELP}")

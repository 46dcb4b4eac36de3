"""Shared fixtures: a tiny synthetic world and the tiny detector spec (plain helpers: tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sadc.models.spec import DetectorSpec
from tests import helpers

torch.set_num_threads(1)  # tests run two workers on two cores


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small synthetic world at 64 px (train 48, val 16, unlabeled 24)."""
    from sadc.data.synth import make_synthetic_world

    out = tmp_path_factory.mktemp("world") / "synth"
    make_synthetic_world(out, train=48, val=16, test=0, unlabeled=24, size=64, seed=0)
    return out


@pytest.fixture
def tiny_spec() -> DetectorSpec:
    """The tiny RetinaNet at 64 px on the synthetic world's classes (tests.helpers.tiny_spec)."""
    return helpers.tiny_spec()

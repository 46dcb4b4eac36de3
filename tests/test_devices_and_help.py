"""Devices as people type them, `sadc val`, predict's default folder, and help that reads as help."""

from __future__ import annotations

import json
import logging

import pytest
from typer.main import get_command

from sadc.cli.main import app
from sadc.devices import parse_device
from sadc.engine.machine import resolve_device
from sadc.errors import SadcError
from sadc.recipe import recipe_from_dict
from tests.helpers import fails_cleanly, invoke, save_tiny_checkpoint


@pytest.mark.parametrize(
    "text, expected",
    [("auto", "auto"), ("cpu", "cpu"), ("CUDA", "cuda"), ("cuda:1", "cuda:1"), ("0", "cuda:0"), (2, "cuda:2"), (" cpu ", "cpu")],
)
def test_parse_device(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "-1", "cpu:0", ""])
def test_parse_device_refuses_with_the_flag(text):
    with pytest.raises(SadcError, match=r"^--dev .*not a device; use auto, cpu, cuda, cuda:N or N"):
        parse_device(text, "--dev")


def test_auto_resolves_here_and_engines_pick_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("auto", cuda_only=True) == "cuda"  # a TensorRT engine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("1") == "cuda:1"


def test_recipe_device_takes_an_index():
    assert recipe_from_dict({"train": {"device": 0}}).train.device == "cuda:0"


def test_bad_device_flag_is_one_line(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    fails_cleanly(invoke("predict", ckpt, tmp_path, "--device", "gpu"), "--device gpu: not a device")
    fails_cleanly(invoke("bench", ckpt, "--no-accuracy", "--device", "gpu"), "--device gpu: not a device")


def test_val_is_bench_without_timing(tiny_world, tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    result = invoke("val", ckpt, "--data", tiny_world / "val.json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "val" / "bench.json").read_text())["results"][0]
    assert saved["latency"] == {} and "mAP" in saved["accuracy"] and set(saved["per_class"]) >= {"circle", "ring"}
    assert "AP per class" in result.output


def test_predict_out_defaults_to_runs_predict_name(tiny_world, tmp_path, monkeypatch):
    ckpt = save_tiny_checkpoint(tmp_path / "student" / "best.pt")
    monkeypatch.chdir(tmp_path)
    for expected in ("student-best", "student-best2"):  # a second run does not overwrite the first
        result = invoke("predict", ckpt, tiny_world / "val" / "000000.png")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "runs" / "predict" / expected / "detections.json").is_file()


def test_old_recipe_bench_section_is_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="sadc"):
        recipe = recipe_from_dict({"bench": {"iters": 3}}, "old.yaml")
    assert "old.yaml: the bench section is no longer part of a recipe" in caplog.text
    assert "bench" not in recipe.model_dump()


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_shows_flags_bare_and_paragraphs_unwrapped():
    root = get_command(app)
    for path, command in _commands(root):
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, f"sadc {' '.join(path)}: hard-wrapped help {paragraph[:60]!r}"
        result = invoke(*path, "--help")
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, f"sadc {' '.join(path)} --help shows <bool>"
    assert "--install-completion" in invoke("--help").output

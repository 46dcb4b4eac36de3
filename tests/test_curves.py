"""TensorBoard events and results.png of a training run: the same numbers as metrics.jsonl."""

import json
import sys

import pytest
from PIL import Image

from sadc.engine.curves import plot_results, read_curves
from sadc.engine.run import run_train
from sadc.recipe import recipe_from_dict
from tests.helpers import tiny_recipe_dict


def _jsonl(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_30_step_run_leaves_tensorboard_events_equal_to_metrics_jsonl_and_results_png(tiny_world, tmp_path):
    pytest.importorskip("tensorboard", reason="the tb extra (pip install 'sadc[tb]') is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=30, eval_every=15, log_every=5, save_every=100))
    run_dir = run_train(recipe)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])

    lines = _jsonl(run_dir)
    train_lines = [x for x in lines if "loss" in x]
    eval_lines = [x for x in lines if "eval" in x]
    assert [x["step"] for x in train_lines] == [5, 10, 15, 20, 25, 30]
    assert [x["step"] for x in eval_lines] == [15, 30]
    expected = {}
    for x in train_lines:
        for k, v in x.items():
            if k not in ("step", "time"):
                expected.setdefault(f"train/{k}", []).append((x["step"], v))
    for x in eval_lines:
        for k, v in x["eval"].items():
            if isinstance(v, float):
                expected.setdefault(f"val/{k}", []).append((x["step"], v))
    assert {"train/loss", "train/cls", "train/lr", "val/mAP", "val/AP50"} <= set(expected)
    assert tags == set(expected)
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        # TensorBoard stores float32
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-7), tag

    png = run_dir / "results.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200


def test_results_png_is_rewritten_at_each_evaluation(tiny_world, tmp_path, monkeypatch):
    from sadc.engine import curves

    drawn = []
    real = curves.plot_results
    monkeypatch.setattr(
        curves, "plot_results", lambda m, out: drawn.append(len(read_curves(m)[1].get("mAP", []))) or real(m, out)
    )
    run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=6, eval_every=3, log_every=2)))
    assert drawn == [1, 2]  # at step 3 with one mAP point, at step 6 with two


def test_a_run_without_tensorboard_finishes_and_says_so_in_one_line(tiny_world, tmp_path, monkeypatch, capsys):
    # None in sys.modules makes `import tensorboard` (and torch's wrapper, if cached) raise ImportError.
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorboard"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run_dir = run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=4, eval_every=0, log_every=2)))
    out = capsys.readouterr().out
    said = [ln for ln in out.splitlines() if "TensorBoard" in ln]
    assert len(said) == 1 and "not installed" in said[0] and "sadc[tb]" in said[0]
    assert (run_dir / "best.pt").is_file() and (run_dir / "results.png").is_file()
    assert not list(run_dir.glob("events.out.tfevents.*"))


def test_plot_results_draws_loss_terms_and_map_from_metrics_jsonl(tmp_path):
    lines = [
        {"cls": 1.0, "box": 0.5, "loss": 1.5, "lr": 0.01, "img_s": 3.0, "grad_norm": 2.0, "step": 2, "time": 1.0},
        {"cls": 0.8, "box": 0.4, "loss": 1.2, "lr": 0.005, "img_s": 3.0, "grad_norm": 2.0, "step": 4, "time": 2.0},
        {"step": 4, "eval": {"mAP": 0.1, "AP50": 0.3, "AP75": 0.05, "per_class": {"a": {"AP": 0.1}}}},
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(x) + "\n" for x in lines))
    train, val = read_curves(metrics)
    assert train["cls"] == [(2, 1.0), (4, 0.8)] and train["lr"] == [(2, 0.01), (4, 0.005)]
    assert val == {"mAP": [(4, 0.1)], "AP50": [(4, 0.3)], "AP75": [(4, 0.05)]}
    assert plot_results(metrics, tmp_path / "results.png") == tmp_path / "results.png"
    assert plot_results(tmp_path / "absent.jsonl", tmp_path / "none.png") is None

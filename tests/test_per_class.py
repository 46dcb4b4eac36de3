"""AP per class: equal to COCOeval restricted to that class, and reported as the classes that lost most."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from sadc.bench.classes import class_drops, lost_lines
from sadc.bench.report import markdown, write_reports
from sadc.bench.run import BenchReport, BenchResult
from sadc.data.evaluate import coco_map
from tests.helpers import noisy_detections


def _one_class_stats(gt_json, results, cat_id) -> list[float]:
    """pycocotools itself, with params.catIds = [cat_id]: the independent per-class reference."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.catIds = [cat_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_per_class_ap_equals_cocoeval_on_that_class_alone(tiny_world):
    gt_json = tiny_world / "val.json"
    results = noisy_detections(gt_json, seed=1)
    metrics = coco_map(gt_json, results)
    data = json.loads(gt_json.read_text())
    per_class = metrics["per_class"]
    assert list(per_class) == [c["name"] for c in data["categories"]]
    aps = []
    for cat in data["categories"]:
        ref = _one_class_stats(gt_json, results, cat["id"])
        ours = per_class[cat["name"]]
        assert ours["AP"] == pytest.approx(ref[0], abs=1e-6), cat["name"]
        assert ours["AP50"] == pytest.approx(ref[1], abs=1e-6), cat["name"]
        assert ours["gt"] == sum(1 for a in data["annotations"] if a["category_id"] == cat["id"])
        aps.append(ours["AP"])
    assert len(set(round(a, 4) for a in aps)) > 1  # the classes really differ
    assert sum(aps) / len(aps) == pytest.approx(metrics["mAP"], abs=1e-6)  # mAP is their mean


def test_no_detections_gives_zero_ap_with_gt_counts(tiny_world):
    metrics = coco_map(tiny_world / "val.json", [])
    assert all(c["AP"] == 0.0 and c["gt"] > 0 for c in metrics["per_class"].values())


def _report() -> BenchReport:
    def result(name, aps):
        per_class = {c: {"AP": ap, "AP50": ap, "gt": 10} for c, ap in aps.items()}
        return BenchResult(name=name, path=name, backend="onnxruntime", file_mb=1.0, accuracy={"mAP": 0.5}, per_class=per_class)

    ref = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5}
    int8 = {"a": 0.6, "b": 0.79, "c": 0.2, "d": 0.65, "e": 0.4}  # lost most: c -0.5, a -0.3, e -0.1
    return BenchReport(
        machine={},
        settings={
            "batches": [1],
            "warmup": 1,
            "iters": 1,
            "threads": 1,
            "data": "v",
            "gflops": "-",
            "model_only": {},
            "device": "cpu",
        },
        results=[result("fp32", ref), result("int8", int8)],
    )


def test_bench_md_names_the_three_classes_that_lost_most(tmp_path):
    report = _report()
    assert [n for n, _ in class_drops(report, report.results[1])[:3]] == ["c", "a", "e"]
    assert lost_lines(report) == ["- int8: c -0.5000, a -0.3000, e -0.1000"]
    md = markdown(report)
    assert "Classes whose AP fell most against fp32:" in md and "- int8: c -0.5000, a -0.3000, e -0.1000" in md
    written = write_reports(report, tmp_path)
    assert tmp_path / "bench_classes.png" in written and (tmp_path / "bench_classes.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["results"][1]["per_class"]["c"] == {"AP": 0.2, "AP50": 0.2, "gt": 10}


def test_training_evaluation_logs_per_class(tiny_world, tmp_path):
    from sadc.engine.run import run_train
    from sadc.recipe import recipe_from_dict
    from tests.helpers import tiny_recipe_dict

    run_dir = run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=2, eval_every=2, log_every=1)))
    evals = [json.loads(line)["eval"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals and set(evals[-1]["per_class"]) == {"circle", "square", "triangle", "cross", "ring"}
    assert all(set(c) == {"AP", "AP50", "gt"} for c in evals[-1]["per_class"].values())

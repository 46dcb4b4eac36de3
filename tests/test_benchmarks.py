"""The benchmark scripts' pipelines work (tiny versions; they assert nothing about speed or mAP)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sadc.errors import SadcError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ablation_quick_runs_every_row(monkeypatch, capsys, tmp_path):
    import tempfile

    from benchmarks import ablation

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where --quick puts its world and runs
    monkeypatch.setattr(sys, "argv", ["ablation.py", "--quick", "--knobs"])
    ablation.main()
    out = capsys.readouterr().out
    assert not list(tmp_path.iterdir()), "ablation --quick left its temporary folder (~700 MB) behind"
    for row in ablation.ROWS:
        assert f"| ({row.key}) |" in out
    # One tuned row (mean over its runs) and one knob (per seed) are trained and tabulated.
    tuned, knob = ablation.TUNED_ROWS[0], ablation.KNOBS[0]
    assert f"| ({tuned.row}) | " in out and f"| {tuned.label} | 1 |" in out
    assert f"| {knob.label} | 1 |" in out
    # Row b and its tuned twin both ran on seed 0: one is chosen on val and reported.
    assert "| KL, labeled images | (b) paper knobs: " in out


def test_knob_runs_have_their_own_names():
    from benchmarks.ablation import KNOBS, ROWS, TUNED_ROWS

    names = [k.name for k in [*TUNED_ROWS, *KNOBS]]
    assert len(set(names)) == len(names)
    assert {k.row for k in [*TUNED_ROWS, *KNOBS]} <= {r.key for r in ROWS}


def test_replace_block_keeps_the_prose():
    from benchmarks.ablation import replace_block

    text = "intro\n<!-- t:start -->\nold\n<!-- t:end -->\nprose\n"
    assert replace_block(text, "t", "new") == "intro\n<!-- t:start -->\nnew\n<!-- t:end -->\nprose\n"
    assert replace_block("intro\n", "t", "new") == "intro\n\n<!-- t:start -->\nnew\n<!-- t:end -->\n"


@pytest.mark.parametrize("values, expected", [([0.2, 0.4], (0.3, 0.1)), ([0.5], (0.5, 0.0))])
def test_ablation_spread(values, expected):
    from benchmarks.ablation import spread

    assert spread(values) == pytest.approx(expected)


def test_budget_plot_reads_each_runs_evaluations(tmp_path):
    import json

    from benchmarks.ablation import BUDGET, Setup, eval_curve, plot_budget

    def run(folder, evals):
        folder.mkdir(parents=True)
        lines = [{"step": 10, "loss": 1.0}] + [{"step": s, "eval": {"mAP": m}} for s, m in evals]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    setup = Setup(tmp_path, tmp_path / "teacher" / "best.pt", tmp_path / "a", 400, [0], False, knobs_out=tmp_path / "k")
    run(tmp_path / "teacher", [(100, 0.1), (200, 0.5)])
    assert eval_curve(tmp_path / "teacher") == [(100, 0.1), (200, 0.5)]
    assert not plot_budget(setup, tmp_path / "b.png")  # the student runs are missing: no picture
    for name in BUDGET.values():
        run(tmp_path / "k" / f"{name}-s0", [(400, 0.2), (800, 0.4)])
    assert plot_budget(setup, tmp_path / "b.png") and (tmp_path / "b.png").stat().st_size > 1000


def test_mean_curve_averages_the_steps_every_run_has(tmp_path):
    import json

    from benchmarks.ablation import mean_curve

    for name, evals in {"s0": [(400, 0.2), (800, 0.4)], "s1": [(400, 0.4), (800, 0.6), (1200, 0.7)]}.items():
        (tmp_path / name).mkdir()
        lines = [{"step": s, "eval": {"mAP": m}} for s, m in evals]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = mean_curve([tmp_path / "s0", tmp_path / "s1", tmp_path / "missing"])
    assert [s for s, _ in got] == [400, 800]
    assert [m for _, m in got] == pytest.approx([0.3, 0.5])


@pytest.mark.parametrize(
    "better, worse, expected",
    [([0.5, 0.6], [0.3, 0.4], "holds"), ([0.3, 0.4], [0.5], "does not hold"), ([0.3, 0.5], [0.4], "within noise")],
)
def test_claim_verdict_needs_every_run_on_one_side(better, worse, expected):
    from benchmarks.ablation import verdict

    assert verdict(better, worse) == expected


def test_claims_table_picks_the_family_member_on_val_and_pairs_seeds(tmp_path, monkeypatch):
    from benchmarks import ablation

    setup = ablation.Setup(tmp_path, tmp_path / "t.pt", tmp_path / "a", 400, [0, 1], False, knobs_out=tmp_path / "k")
    setup.results = {
        "b": [{"seed": 0, "mAP": 0.40}, {"seed": 1, "mAP": 0.42}],
        "d": [{"seed": 0, "mAP": 0.30}, {"seed": 1, "mAP": 0.44}],
    }
    # d-lambda10-gamma1 is better on val, and on test it beats b on each seed but not outside the spread.
    setup.knob_results = {"d-lambda10-gamma1": [{"seed": 0, "mAP": 0.41}, {"seed": 1, "mAP": 0.45}]}
    val = {"d": 0.2, "d-lambda10-gamma1": 0.3, "b": 0.1, "b-lambda10": 0.0}
    monkeypatch.setattr(ablation, "val_map", lambda run_dir: val[run_dir.name.rsplit("-s", 1)[0]])
    setup.knob_results["b-lambda10"] = [{"seed": 0, "mAP": 0.1}, {"seed": 1, "mAP": 0.1}]
    lines = ablation.claims_table(setup).splitlines()
    paper = next(line for line in lines if "| paper knobs, labeled images |" in line)
    assert "-4.0 (-10.0, +2.0)" in paper and "**within noise**" in paper
    best = next(line for line in lines if "| best knobs on val, labeled images |" in line)
    assert "(d) lambda 10, gamma 1" in best and "+2.0 (+1.0, +3.0)" in best
    assert "**within noise (A ahead on each of the 2 seeds)**" in best
    assert not any("(iii)" in line for line in lines)  # rows e and f have not run: no line


def test_quick_runs_keep_their_few_steps_whatever_the_knob(tmp_path):
    from benchmarks.ablation import KNOBS, ROW_BY_KEY, Setup, base_recipe

    budget = next(k for k in KNOBS if k.name.endswith("steps1200"))
    for quick, steps in ((True, 2), (False, 1200)):
        setup = Setup(tmp_path, tmp_path / "t.pt", tmp_path / "a", 2 if quick else 400, [0], quick, knobs_out=tmp_path / "k")
        assert base_recipe(setup, ROW_BY_KEY[budget.row], 0, budget).train.steps == steps


@pytest.mark.parametrize(
    "argv, message",
    [(["--only", "b-steps1200"], "add --knobs"), (["--knobs", "--only", "b-step1200"], "no knob run named b-step1200")],
)
def test_ablation_only_names_knob_runs_it_knows(monkeypatch, capsys, argv, message):
    from benchmarks import ablation

    monkeypatch.setattr(sys, "argv", ["ablation.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        ablation.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_distill_overhead_real_batch_is_the_worlds_images_and_boxes(tmp_path):
    """The realistic setup's batch: train images with the json's boxes, then unlabeled files."""
    import json

    import numpy as np
    import torch
    from PIL import Image

    from benchmarks.distill_overhead import real_batch
    from sadc.data.synth import make_synthetic_world

    make_synthetic_world(tmp_path, train=3, val=0, test=0, unlabeled=3, size=64, seed=0)
    images, gt = real_batch(4, tmp_path, (64, 64))

    def read_image(path):  # PIL directly, not sadc's loader
        return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)

    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8 and len(gt) == 4
    coco = json.loads((tmp_path / "train.json").read_text())
    for k in range(2):  # the labeled half, in the json's order, from the json by hand
        im = coco["images"][k]
        rows = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        want = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in rows)]).reshape(-1, 4)
        torch.testing.assert_close(gt[k]["boxes"], want, check_dtype=False)
        assert gt[k]["labels"].tolist() == [a["category_id"] - 1 for a in rows]
        assert torch.equal(images[k], read_image(tmp_path / "train" / im["file_name"]))
    first_unlabeled = sorted((tmp_path / "unlabeled").glob("*.png"))[0]
    assert torch.equal(images[2], read_image(first_unlabeled))


def test_stage_time_logs_each_command_and_passes_its_status_on(tmp_path, capsys):
    """`make demo STAGE=...`'s wrapper: the machine line once, then one timed line per command."""
    from benchmarks.stage_time import main

    log = tmp_path / "times.txt"
    assert main(["--log", str(log), sys.executable, "-c", "import time; time.sleep(0.2)"]) == 0
    assert main(["--log", str(log), sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    assert "kernels " in lines[0] and "torch" in lines[0]
    first, second = lines[1].split(" s rc=0: "), lines[2].split(" s rc=3: ")
    assert float(first[0]) >= 0.2 and first[1].endswith("-c 'import time; time.sleep(0.2)'")
    assert second[1].endswith("-c 'import sys; sys.exit(3)'")
    assert lines[2] in capsys.readouterr().err


def test_stage_time_says_in_one_line_when_the_command_cannot_run(tmp_path, capsys):
    from benchmarks.stage_time import main

    missing = tmp_path / "no-such-sadc"
    with pytest.raises(SystemExit) as exit_:
        main(["--log", str(tmp_path / "times.txt"), str(missing), "train"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.endswith(f"cannot run {missing}: No such file or directory; check the command's path"), err


def test_a_benchmark_reports_a_user_mistake_in_one_line(tmp_path, monkeypatch, capsys):
    """Every script ends in ``benchmarks.common.run``: a SadcError is one line and exit code 2, not a traceback."""
    from benchmarks import ort_profile
    from benchmarks.common import run

    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"not a graph")
    monkeypatch.setattr(sys, "argv", ["ort_profile", str(graph)])
    with pytest.raises(SystemExit) as exit_:
        run(ort_profile.main)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {graph}.json not found") and err.count("\n") == 1, err
    scripts = [f for f in (ROOT / "benchmarks").glob("*.py") if '__name__ == "__main__"' in f.read_text()]
    own_exit = {"avx2_cpu.py", "gpu_check.py", "stage_time.py"}  # no torch import: they print their own one-line errors
    assert {f.name for f in scripts if "run(main)" not in f.read_text()} == own_exit


def test_deploy_topk_times_both_forms_and_checks_they_select_the_same_pairs(monkeypatch, capsys):
    from benchmarks import deploy_topk

    argv = ["deploy_topk", "--shape", "40,3", "--k", "30", "--batch", "1", "3", "--rounds", "1", "--iters", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    deploy_topk.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("scores [B, 40, 3], k 30;")
    assert [line.split(":")[0] for line in lines[2:]] == ["batch 1", "batch 3"]
    assert all(line.endswith("same pairs: yes") for line in lines[2:]), lines
    assert deploy_topk.shape_of("coco") == (76725, 80)
    with pytest.raises(SadcError, match="--shape 40x3: quickstart, coco or A,C"):
        deploy_topk.shape_of("40x3")


def test_ort_profile_counts_each_kernel_of_the_optimized_graph_once_per_call(tmp_path):
    import collections

    import onnx

    from benchmarks.ort_profile import profile
    from sadc.export.onnx import export_onnx
    from sadc.models.detector import build_detector
    from sadc.runtime.onnx_rt import make_session
    from tests.helpers import tiny_spec

    graph = export_onnx(build_detector(tiny_spec()).eval(), tmp_path / "tiny.onnx")
    per_op, count = profile(graph, batch=2, runs=3, warmup=2, threads=1, folder=None)
    # the graph ORT runs, after the same optimizations: one kernel per node per call
    make_session(graph, threads=1, options={"optimized_model_filepath": str(tmp_path / "optimized.onnx")})
    nodes = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert {op: round(n, 6) for op, n in count.items()} == dict(nodes)
    assert set(per_op) == {*nodes, "(wall p50)"} and all(ms >= 0 for ms in per_op.values())


def test_interference_reads_each_cells_p50_and_divides_by_the_first_artefacts_at_its_batch():
    from benchmarks.interference import p50s, ratios

    def cell(batch, ms):
        return {"batch": batch, "p50_ms": ms}

    report = {
        "results": [
            {"name": "teacher", "latency": {"model": [cell(1, 10.0), cell(8, 40.0)]}},
            {"name": "student", "latency": {"model": [cell(1, 4.0), cell(8, 30.0)]}},
        ]
    }
    p = p50s(report)
    assert p == {("teacher", 1): 10.0, ("teacher", 8): 40.0, ("student", 1): 4.0, ("student", 8): 30.0}
    assert ratios(p, "teacher") == {("student", 1): 0.4, ("student", 8): 0.75}


def test_teacher_option_of_distill_overhead_and_roofline(tmp_path, monkeypatch, capsys):
    """--teacher: random -> None, a file -> that file, auto -> the demo's teacher only where it and the world exist,
    a missing file -> a usage error naming it (both scripts read the option through these two functions)."""
    import argparse

    from benchmarks import distill_overhead

    ap = argparse.ArgumentParser(prog="roofline.py")
    distill_overhead.add_teacher_option(ap)
    ckpt = tmp_path / "t.pt"
    ckpt.write_bytes(b"x")
    assert distill_overhead.teacher_option(ap, ap.parse_args([]).teacher) == distill_overhead.default_teacher()
    assert distill_overhead.teacher_option(ap, "random") is None
    assert distill_overhead.teacher_option(ap, str(ckpt)) == ckpt
    monkeypatch.setattr(distill_overhead, "DEMO_TEACHER", ckpt)
    monkeypatch.setattr(distill_overhead, "DEMO_DATA", tmp_path / "no-world")
    assert distill_overhead.teacher_option(ap, "auto") is None  # no data/synth: random weights
    (tmp_path / "no-world").mkdir()
    (tmp_path / "no-world" / "train.json").write_text("{}")
    assert distill_overhead.teacher_option(ap, "auto") == ckpt
    with pytest.raises(SystemExit) as exit_:
        distill_overhead.teacher_option(ap, str(tmp_path / "missing.pt"))
    assert exit_.value.code == 2 and f"--teacher {tmp_path / 'missing.pt'}: no such checkpoint" in capsys.readouterr().err


def test_avx2_cpu_masks_avx512_and_vnni_for_every_library():
    """benchmarks.avx2_cpu: a command run through it sees an AVX2 CPU (numpy's CPUID probe and torch's kernels),
    where this process sees AVX-512; a command that fails gives its own exit code back."""
    from benchmarks import avx2_cpu

    if why := avx2_cpu.unavailable():
        pytest.skip(f"benchmarks.avx2_cpu cannot mask this machine: {why}")
    from numpy._core._multiarray_umath import __cpu_features__ as here

    if not here["AVX512F"]:
        pytest.skip("this CPU has no AVX-512 to mask, so the mask would change nothing to observe")
    probe = (
        "import torch; from numpy._core._multiarray_umath import __cpu_features__ as f; "
        "print(f['AVX2'], f['AVX512F'], f['AVX512VNNI'], torch.backends.cpu.get_cpu_capability())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "PYTHONFAULTHANDLER")}
    run = [sys.executable, "-m", "benchmarks.avx2_cpu", "--"]
    masked = subprocess.run([*run, sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=ROOT)
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.split() == ["True", "False", "False", "AVX2"]
    failing = subprocess.run([*run, sys.executable, "-c", "raise SystemExit(3)"], env=env, capture_output=True, cwd=ROOT)
    assert failing.returncode == 3

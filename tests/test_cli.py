"""The CLI through Typer's CliRunner: exit codes and what a user reads."""

import json

import pytest
import yaml

from sadc.artefacts.checkpoint import load_checkpoint
from tests.helpers import invoke, pycocotools_stats, tiny_recipe_dict


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "distill", "pseudo-label", "export", "bench", "predict", "doctor", "data", "recipe"):
        assert command in result.output


def test_doctor_reports_versions_and_unavailable_features():
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    assert "torch" in result.output and "onnxruntime" in result.output
    assert "tensorrt" in result.output.lower()


def test_cpu_flags_and_int8_dot_products(tmp_path):
    from sadc.engine.machine import cpu_flags, int8_dot_products

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n")
    assert cpu_flags(x86) == frozenset({"fpu", "sse2", "avx", "avx2", "fma"})
    assert int8_dot_products(cpu_flags(x86)) == []  # a Zen 3: no VNNI
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp sha2\n")
    assert int8_dot_products(cpu_flags(arm)) == ["asimddp"]
    assert int8_dot_products(frozenset({"avx512f", "amx_int8", "avx512_vnni"})) == ["avx512_vnni", "amx_int8"]
    assert cpu_flags(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("dots", "status", "detail"),
    [
        (["avx512_vnni"], "ok", "avx512_vnni: ONNX Runtime's fast INT8 kernels"),
        ([], "slow", "no INT8 dot-product instructions (VNNI/AMX/asimddp): ONNX Runtime's INT8 may be no faster than fp32 here"),
        (None, "unknown", "no CPU flags to read"),
    ],
)
def test_doctor_says_whether_int8_has_its_fast_kernels(monkeypatch, dots, status, detail):
    import sadc.cli.doctor as doctor

    got_status, got_detail = doctor.int8_row(dots)
    assert status in got_status and detail in got_detail
    monkeypatch.setattr(doctor, "int8_dot_products", lambda: dots)
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    assert "int8 (cpu)" in result.output and status in next(line for line in result.output.splitlines() if "int8 (cpu)" in line)


@pytest.mark.parametrize(
    "content, message",
    [
        ("train:\n  stpes: 3\n", "unknown key train.stpes (did you mean train.steps?)"),
        ("train: [1, 2\n", "malformed YAML at line"),
        ("train:\n  lr: -1\n", "train.lr: Input should be greater than 0"),
    ],
)
def test_bad_recipe_is_one_line_exit_2(tmp_path, content, message):
    path = tmp_path / "r.yaml"
    path.write_text(content)
    result = invoke("train", "--recipe", path)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  stpes: 3\n")
    result = invoke("--debug", "train", "--recipe", path)
    assert result.exit_code != 0 and result.exception is not None


def test_recipe_show_applies_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\n")
    result = invoke("recipe", "show", path, "train.steps=123")
    assert result.exit_code == 0, result.output
    assert "steps: 123" in result.output


def test_train_then_bench_end_to_end(tiny_world, tmp_path):
    """bench's mAP of a trained checkpoint equals the trainer's own evaluation and pycocotools' on the saved detections.

    10 steps at lr 0.01 is the shortest run whose student finds some objects (AR100 ~0.03), so that
    the three computations agree on non-zero numbers, not only on zeros.
    """
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_world, tmp_path / "runs", steps=10, lr=0.01, eval_every=10)))
    result = invoke("train", "--recipe", path)
    assert result.exit_code == 0, result.output
    best = tmp_path / "runs" / "tiny" / "best.pt"
    trainer_metrics = load_checkpoint(best)["metrics"]  # evaluated in the training loop, on batches of the val loader
    dets = tmp_path / "dets.json"
    result = invoke(
        "bench", best, "--data", tiny_world / "val.json", "--save-detections", dets, "--out", tmp_path / "b", "--no-latency"
    )
    assert result.exit_code == 0, result.output
    assert "mAP" in result.output
    accuracy = json.loads((tmp_path / "b" / "bench.json").read_text())["results"][0]["accuracy"]
    detections = json.loads(dets.read_text())
    assert detections and accuracy["AR100"] > 0, accuracy
    reference = dict(
        zip(
            ["mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"],
            pycocotools_stats(tiny_world / "val.json", detections),
        )
    )
    for name, value in reference.items():
        assert accuracy[name] == pytest.approx(max(value, 0.0), abs=1e-4), name
        assert accuracy[name] == pytest.approx(trainer_metrics[name], abs=1e-4), name


def test_bench_missing_inputs_are_clear(tmp_path):
    result = invoke("bench", tmp_path / "nope.pt", "--data", tmp_path / "val.json")
    assert result.exit_code == 2 and "val.json: not found" in result.output
    (tmp_path / "val.json").write_text("{}")
    result = invoke("bench", tmp_path / "nope.pt", "--data", tmp_path / "val.json")
    assert result.exit_code == 2 and "nope.pt: model not found" in result.output

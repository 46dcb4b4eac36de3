"""A user mistake in predict, bench, val or data preview is one line, exit 2, before torch is imported."""

import json
import subprocess
import sys

CASES = [
    (["predict", "missing.pt", "a.png"], "missing.pt: model not found"),
    (["predict", "notes.txt", "a.png"], "notes.txt: unknown artefact type '.txt'"),
    (["predict", "empty.pt", "missing.png"], "missing.png: no such file or folder"),
    (["predict", "empty.pt", "a.png", "--conf", "2"], "--conf 2.0: must be in [0, 1)"),
    (["predict", "empty.pt", "a.png", "--device", "gpu"], "gpu"),
    (["bench", "missing.pt"], "missing.pt: model not found"),
    (["bench", "folder"], "folder: a folder, not a model file"),
    (["bench", "empty.pt", "--data", "missing.json"], "--data missing.json: not found"),
    (["val", "empty.pt", "--data", "notes.txt"], "--data notes.txt: not a .json (COCO) or .yaml (YOLO) file"),
    (["val", "empty.onnx", "missing.engine", "--data", "val.json"], "missing.engine: model not found"),
    (["val", "missing.pt", "--data", "missing.json"], "--data missing.json: not found"),
    (["data", "preview", "missing.json"], "missing.json: not found"),
    (["data", "preview", "folder"], "folder: a folder with neither a data.yaml (YOLO) nor an Annotations/ folder (VOC)"),
]

CODE = """
import contextlib, io, json, sys
from typer.main import get_command
from sadc.cli.main import app
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = get_command(app)(argv, standalone_mode=False)
    out.append([code, err.getvalue()])
heavy = sorted(m for m in ("torch", "torchvision", "onnx", "onnxruntime") if m in sys.modules)
print(json.dumps({"results": out, "heavy": heavy}))
"""


def test_mistakes_are_one_line_before_torch_is_imported(tmp_path):
    for name in ("empty.pt", "empty.onnx", "a.png", "notes.txt", "val.json"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder").mkdir()
    argvs = [argv for argv, _ in CASES]
    # One process for all cases (CPU is shared); torch must still be absent after the last.
    run = subprocess.run(
        [sys.executable, "-c", CODE, json.dumps(argvs)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.splitlines()[-1])
    for (argv, expected), (code, err) in zip(CASES, report["results"], strict=True):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (argv, code, err)
    assert report["heavy"] == []

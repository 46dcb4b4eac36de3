"""benchmarks/gpu_check.sh: on a machine without CUDA it stops at once with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the script would run its stages")
def test_gpu_check_refuses_cleanly_without_cuda(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SADC_GPU_CHECK_ALLOW_CPU", "OUT")}
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("gpu_check: no CUDA GPU here") and not (tmp_path / "gpu_check.md").exists()


def test_gpu_check_python_entry_refuses_too(capsys, monkeypatch):
    """The Python half says the same when called directly (python3 benchmarks/gpu_check.py)."""
    from benchmarks import gpu_check

    monkeypatch.delenv("SADC_GPU_CHECK_ALLOW_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--work", "/nonexistent/never-made"]) == 2
    assert capsys.readouterr().out.strip().startswith("gpu_check: no CUDA GPU here")

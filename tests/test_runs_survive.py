"""No run loses work: signals, kills during writes, full or read-only disks, refused resumes, a failing DDP rank.

Real subprocesses where signals and kills are the point, the CLI otherwise, on the tiny
synthetic world. The cases are listed in docs/troubleshooting.md.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sadc.artefacts.checkpoint import load_checkpoint, save_checkpoint
from sadc.errors import CheckpointError
from tests.helpers import fails_cleanly, invoke, tiny, write_recipe

ROOT = Path(__file__).resolve().parents[1]


def signal_training_run(path: Path, runs: Path, tmp_path: Path, deliver, *extra: str) -> tuple[int, str]:
    """Start a real `sadc train` process (own session, 1 thread), wait for its first metrics line,
    call ``deliver(proc)`` (send a signal), wait; returns (exit code, stderr). Killed if it hangs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "err.txt", "w") as err:  # a file: a full pipe cannot stall the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "sadc", "train", "--recipe", str(path), *extra],
            stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    metrics = runs / "tiny" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and metrics.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()
            time.sleep(0.05)
        deliver(proc)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, (tmp_path / "err.txt").read_text()


@pytest.mark.slow
def test_sigterm_saves_last_pt_then_resume_completes(tiny_world, tmp_path):
    """A real `sadc train` process gets SIGTERM after its first metrics line: exit 130, last.pt, --resume finishes."""
    runs = tmp_path / "runs"
    path = write_recipe(tmp_path / "r.yaml", tiny(tiny_world, runs, steps=500, log_every=1, save_every=1000))
    code, stderr = signal_training_run(path, runs, tmp_path, lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 130, stderr
    metrics = runs / "tiny" / "metrics.jsonl"
    assert "interrupted at step" in stderr and "continue with --resume" in stderr and "Traceback" not in stderr
    step = load_checkpoint(runs / "tiny" / "last.pt")["step"]
    assert 1 <= step < 500
    # Resume to a nearer finish line (the schedule follows the new train.steps).
    result = invoke("train", "--recipe", path, "--resume", f"train.steps={step + 3}")
    assert result.exit_code == 0, result.output
    last = load_checkpoint(runs / "tiny" / "last.pt")
    assert last["step"] == step + 3 and last["finished"]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if "loss" in line]
    assert steps == list(range(1, step + 4))  # no step logged twice, none missing


WRITER = """
import os, sys, torch
from sadc.artefacts.checkpoint import load_checkpoint, save_checkpoint
target, n, step = sys.argv[1], int(sys.argv[2]), 0
for _ in sys.stdin:  # per round: fork a child that saves in a loop until it is killed (torch is imported once)
    pid = os.fork()
    if pid == 0:
        while True:
            step += 1
            save_checkpoint(target, {"spec": {}, "model": {"w": torch.full((n,), float(step))}, "step": step})
            print("saved", step, flush=True)
    print("child", pid, flush=True)
    os.waitpid(pid, 0)
    step = load_checkpoint(target)["step"]
    print("ready", step, flush=True)
"""


def test_kill_9_during_checkpoint_writes_never_corrupts_last_pt(tmp_path):
    """SIGKILL processes that save a 16 MB checkpoint in a loop, at random moments: last.pt always loads."""
    from sadc.artefacts.files import remove_stale_temp_files
    from sadc.engine.rundir import prepare_run_dir

    target = tmp_path / "run" / "last.pt"
    target.parent.mkdir()
    rng = random.Random(0)
    last_seen = 0
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(4 << 20)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        for round_ in range(4):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            lines = [proc.stdout.readline().split() for _ in range(2)]  # "child PID" and the first "saved N", any order
            assert sorted(line[0] for line in lines) == ["child", "saved"], lines
            child = next(int(line[1]) for line in lines if line[0] == "child")
            time.sleep(rng.uniform(0.0, 0.3))
            if round_ % 2 == 0:  # and for certain mid-write: once the temp file exists
                deadline = time.monotonic() + 2
                while not list(target.parent.glob(".last.pt.*.tmp")) and time.monotonic() < deadline:
                    time.sleep(0.001)
            os.kill(child, signal.SIGKILL)
            saved = [int(line[1]) for line in lines if line[0] == "saved"]
            while (line := proc.stdout.readline().split())[0] != "ready":
                saved.append(int(line[1]))
            ckpt = load_checkpoint(target)  # never a torn file
            assert int(line[1]) == ckpt["step"] >= max(saved)  # the last completed save (or the one just after its print)
            assert torch.equal(ckpt["model"]["w"][:3], torch.full((3,), float(ckpt["step"])))
            assert ckpt["step"] > last_seen  # this round's writes, not an older file
            last_seen = ckpt["step"]
    finally:
        proc.kill()
        proc.wait()
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "last.pt"]
    assert leftovers  # the writes killed mid-way left their temp files, and only those
    assert all(name.startswith(".last.pt.") and name.endswith(".tmp") for name in leftovers), leftovers
    assert [p.name for p in target.parent.glob("*.pt")] == ["last.pt"]  # nothing else looks like a checkpoint
    run_dir, resume_from = prepare_run_dir(target.parent, resume=True)  # resuming clears them
    assert resume_from == target and [p.name for p in run_dir.iterdir()] == ["last.pt"]
    assert remove_stale_temp_files(target.parent) == []


def _save(path: Path, step: int) -> None:
    save_checkpoint(path, {"spec": {}, "model": {"w": torch.full((1000,), float(step))}, "step": step})


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_disk_full_or_read_only_keeps_the_previous_checkpoint(code, tmp_path, monkeypatch):
    last = tmp_path / "last.pt"
    _save(last, 1)
    if code == errno.ENOSPC:  # the disk fills up half-way through the write

        def half_then_full(obj, f, *args, **kwargs):
            f.write(b"x" * 1000)
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(torch, "save", half_then_full)
    else:  # the folder cannot take a new file
        import tempfile

        monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(OSError(code, os.strerror(code))))
    with pytest.raises(
        CheckpointError, match=rf"last\.pt: cannot write \({os.strerror(code)}\); the previous file, if any, is intact"
    ):
        _save(last, 2)
    monkeypatch.undo()
    assert load_checkpoint(last)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the EROFS/EACCES cases above cover it")
def test_read_only_run_directory_keeps_the_previous_checkpoint(tmp_path):
    last = tmp_path / "run" / "last.pt"
    _save(last, 1)
    last.parent.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="cannot write"):
            _save(last, 2)
    finally:
        last.parent.chmod(0o755)
    assert load_checkpoint(last)["step"] == 1


def test_a_full_disk_mid_run_stops_with_one_line_and_keeps_last_pt(tiny_world, tmp_path, monkeypatch):
    import sadc.engine.trainer as trainer_mod

    saves = {"n": 0}
    real = trainer_mod.save_checkpoint

    def second_save_fails(path, payload):
        saves["n"] += 1
        if saves["n"] == 2:
            raise CheckpointError(f"{path}: cannot write (No space left on device); the previous file, if any, is intact.")
        real(path, payload)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", second_save_fails)
    data = tiny(tiny_world, tmp_path / "runs", steps=6, warmup_steps=1, save_every=2)
    data["data"]["val"] = None
    fails_cleanly(invoke("train", "--recipe", write_recipe(tmp_path / "r.yaml", data)), "No space left on device", "intact")
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")["step"] == 2


def test_resume_refuses_what_it_cannot_continue(tiny_world, tmp_path):
    data = tiny(tiny_world, tmp_path / "runs", steps=2, warmup_steps=0)
    data["data"]["val"] = None
    path = write_recipe(tmp_path / "r.yaml", data)
    assert invoke("train", "--recipe", path).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    # a different model in the same run directory
    fails_cleanly(
        invoke("train", "--recipe", path, "--resume", "train.steps=4", "model.student.fpn_channels=8"),
        "does not fit this recipe's model",
    )
    # a run with best.pt but no last.pt: starting afresh there would overwrite best.pt
    (run / "last.pt").unlink()
    fails_cleanly(invoke("train", "--recipe", path, "--resume"), "--resume needs last.pt, but the run has only best.pt", "tiny2")
    assert (run / "best.pt").is_file()
    # a run directory is never reused without --resume
    assert invoke("train", "--recipe", path).exit_code == 0 and (tmp_path / "runs" / "tiny2" / "last.pt").is_file()


HOLD_LOCK = """
import fcntl, os, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
f.seek(0); f.truncate(); f.write(str(os.getpid())); f.flush()
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="run folders are locked with fcntl.flock, which Windows lacks")
def test_a_second_writer_of_a_run_stops_with_one_line_and_the_lock_dies_with_its_process(tiny_world, tmp_path):
    data = tiny(tiny_world, tmp_path / "runs", steps=2, warmup_steps=0)
    data["data"]["val"] = None
    path = write_recipe(tmp_path / "r.yaml", data)
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["--resume"], []):  # a folder holding only the lock is not free for a new run either
            fails_cleanly(invoke("train", "--recipe", path, *args), str(run), f"pid {holder.pid}", "another sadc process")
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    # The OS released the lock with the process (no stale lock file to delete by hand).
    assert invoke("train", "--recipe", path, "--resume").exit_code == 0
    assert load_checkpoint(run / "last.pt")["step"] == 2
    # A finished run leaves its .lock behind; resuming it again is still fine.
    assert invoke("train", "--recipe", path, "--resume").exit_code == 0


@pytest.mark.slow
def test_ddp_rank_failure_ends_every_rank_then_resume_finishes(tiny_world, tmp_path):
    """torchrun, 2 gloo ranks: rank 1 fails at step 3; rank 0 stops with one line and keeps last.pt; --resume completes."""
    data = tiny(tiny_world, tmp_path / "runs", steps=5, warmup_steps=1, log_every=1, save_every=100)
    data["data"].update(batch_size=4, val=None)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SADC_TEST_FAIL_RANK": "1", "SADC_TEST_FAIL_STEP": "3"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tests.ddp_worker"]

    def run(*args, env):
        proc = subprocess.Popen(
            [*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True
        )
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too
            raise
        return proc.returncode, out, err

    code, _, err = run("train", "--recipe", str(recipe), env=env)
    (tmp_path / "ddp-stderr.txt").write_text(err)
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert any("simulated failure on rank 1 at step 3" in line for line in errors), err
    assert any(line.startswith("error: rank 0: another rank stopped") and "saved at step 2" in line for line in errors), err
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")["step"] == 2
    del env["SADC_TEST_FAIL_RANK"]
    code, out, err = run("train", "--recipe", str(recipe), "--resume", env=env)
    assert code == 0, err[-3000:]
    assert "resuming" in out and "x 2 ranks" in out
    last = load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")
    assert last["step"] == 5 and last["finished"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_to_the_process_group_with_loader_workers_saves_last_pt(sig, tiny_world, tmp_path):
    """`timeout`, systemd and Slurm signal the whole process group, DataLoader workers included (Slurm's
    pre-emption: SIGUSR1): the workers ignore it, the main process saves last.pt at the reported step, exit 130."""
    runs = tmp_path / "runs"
    path = write_recipe(tmp_path / "r.yaml", tiny(tiny_world, runs, steps=500, log_every=1, save_every=1000))
    # the group: main process and its DataLoader workers
    code, stderr = signal_training_run(path, runs, tmp_path, lambda proc: os.killpg(proc.pid, sig), "data.workers=2")
    assert code == 130, stderr
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr
    reported = int(re.search(r"interrupted at step (\d+)/500", stderr).group(1))
    assert load_checkpoint(runs / "tiny" / "last.pt")["step"] == reported >= 1

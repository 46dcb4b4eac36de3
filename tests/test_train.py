import copy
import json
import warnings
from typing import ClassVar

import pytest
import torch

from sadc.artefacts.checkpoint import load_checkpoint, save_checkpoint
from sadc.engine.run import SupervisedObjective, run_train
from sadc.errors import CheckpointError, Interrupted, SadcError
from sadc.models.loading import detector_from_checkpoint
from sadc.recipe import recipe_from_dict
from tests.helpers import InterruptAt, logged_losses, tiny_recipe_dict


def test_short_training_run_learns(tiny_world, tmp_path):
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=30, eval_every=0, log_every=5, lr=0.005))
    run_dir = run_train(recipe)
    losses = [loss for _, loss in logged_losses(run_dir)]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0]
    assert (run_dir / "recipe.resolved.yaml").is_file()
    best = load_checkpoint(run_dir / "best.pt")
    assert best["step"] == 30 and best["finished"] and "train" not in best
    assert set(best["metrics"]) >= {"mAP", "AP50", "AP75"}
    assert best["recipe"]["train"]["steps"] == 30


def test_checkpoint_round_trip_gives_same_detections(tiny_world, tmp_path):
    run_dir = run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=3, eval_every=0)))
    ckpt = load_checkpoint(run_dir / "last.pt")
    model = detector_from_checkpoint(ckpt).eval()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    again = detector_from_checkpoint(load_checkpoint(run_dir / "last.pt")).eval()
    with torch.no_grad():
        a, b = model.dense(model.preprocess(x)), again.dense(again.preprocess(x))
    assert torch.equal(a.cls_logits, b.cls_logits)
    assert model.spec == again.spec


def test_interrupt_then_resume_reproduces_uninterrupted_run(tiny_world, tmp_path, monkeypatch):
    """SIGINT saves last.pt; --resume continues to the same losses and weights, step for step."""
    common = dict(steps=8, eval_every=4, log_every=1, save_every=100, deterministic=True)
    straight = run_train(recipe_from_dict({**tiny_recipe_dict(tiny_world, tmp_path / "a", **common)}))

    import sadc.engine.run as run_mod

    monkeypatch.setattr(run_mod, "SupervisedObjective", lambda model, fwd: InterruptAt(SupervisedObjective(model, fwd), 3))
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path / "b", **common))
    with pytest.raises(Interrupted, match=r"interrupted at step 3/8.*--resume"):
        run_train(recipe)
    assert load_checkpoint(tmp_path / "b" / "tiny" / "last.pt")["step"] == 3
    monkeypatch.undo()
    resumed = run_train(recipe, resume=True)

    assert logged_losses(resumed) == logged_losses(straight)
    a = load_checkpoint(straight / "last.pt")["model"]
    b = load_checkpoint(resumed / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run resumes as a no-op
    assert run_train(recipe, resume=True) == resumed


def test_existing_run_dir_is_never_overwritten(tiny_world, tmp_path):
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=1, warmup_steps=0, eval_every=0))
    first, second = run_train(recipe), run_train(recipe)
    assert (first.name, second.name) == ("tiny", "tiny2")


def test_checkpoint_errors_are_one_line(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable sadc checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="a plain state dict, not a sadc checkpoint"):
        load_checkpoint(plain)
    future = tmp_path / "future.pt"
    save_checkpoint(future, {"spec": {}, "model": {}})
    obj = torch.load(future, weights_only=True)
    obj["format_version"] = 99
    torch.save(obj, future)
    with pytest.raises(CheckpointError, match="newer than this sadc understands"):
        load_checkpoint(future)


class _NaNAfter:
    """An objective whose loss turns NaN from the given call on."""

    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0

    def __call__(self, batch):
        self.calls += 1
        losses = self.inner(batch)
        if self.calls > self.after:
            losses["cls"] = losses["cls"] * float("nan")
        return losses


def test_non_finite_losses_stop_the_run_with_the_last_good_checkpoint(tiny_world, tmp_path, monkeypatch):
    import sadc.engine.run as run_mod

    monkeypatch.setattr(run_mod, "SupervisedObjective", lambda model, fwd: _NaNAfter(SupervisedObjective(model, fwd), 3))
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=20, eval_every=0, save_every=3, max_bad_steps=4))
    with pytest.raises(
        SadcError, match=r"4 consecutive steps with a non-finite loss up to step 7.*last\.pt holds the last good state"
    ):
        run_train(recipe)
    last = load_checkpoint(tmp_path / "tiny" / "last.pt")
    assert last["step"] == 3
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_lr_schedule_warmup_cosine_and_a_warmup_longer_than_the_run():
    from sadc.engine.trainer import lr_factor
    from sadc.recipe import TrainSection

    cfg = TrainSection(steps=100, warmup_steps=10, schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(55, cfg) == pytest.approx(0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.0, abs=1e-12)
    short = TrainSection(steps=20, warmup_steps=50)  # the default warm-up on a short run
    assert lr_factor(3, short) == pytest.approx(1.0) and lr_factor(19, short) < 0.05
    step = TrainSection(steps=100, warmup_steps=0, schedule="step", step_milestones=[0.5, 0.9])
    assert [lr_factor(s, step) for s in (0, 49, 50, 89, 90)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def _records(run_dir):
    """metrics.jsonl training lines without the wall-clock fields."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k not in ("img_s", "time")} for x in lines if "loss" in x]


def test_logs_after_a_resume_between_log_lines_equal_the_uninterrupted_run(tiny_world, tmp_path, monkeypatch):
    """Resumed at step 3 with log_every 4: the step-4 line averages steps 1-4 as in one straight run."""
    common = dict(steps=8, eval_every=0, log_every=4, save_every=100, deterministic=True)
    straight = run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path / "a", **common)))

    import sadc.engine.run as run_mod

    monkeypatch.setattr(run_mod, "SupervisedObjective", lambda model, fwd: InterruptAt(SupervisedObjective(model, fwd), 3))
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path / "b", **common))
    with pytest.raises(Interrupted, match="interrupted at step 3/8"):
        run_train(recipe)
    monkeypatch.undo()
    resumed = run_train(recipe, resume=True)
    a, b = _records(straight), _records(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        assert all(x[k] == pytest.approx(y[k], rel=1e-6) for k in x), (x, y)


def test_a_line_over_skipped_steps_averages_the_steps_it_has(tiny_world, tmp_path, monkeypatch):
    """Steps skipped as non-finite are not in the average: the line's loss is the mean of the finite steps."""
    import sadc.engine.run as run_mod

    monkeypatch.setattr(run_mod, "SupervisedObjective", lambda model, fwd: _NaNAt(SupervisedObjective(model, fwd), {2, 3}))
    run_dir = run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=4, eval_every=0, log_every=4)))
    (line,) = _records(run_dir)
    finite = [v for v in _NaNAt.seen if v == v]
    assert len(finite) == 2
    assert line["loss"] == pytest.approx(sum(finite) / 2, rel=1e-5)


class _NaNAt:
    """An objective whose loss is NaN at the given calls (1-based); records every total it returns."""

    seen: ClassVar[list[float]] = []

    def __init__(self, inner, calls):
        self.inner, self.calls, self.n = inner, calls, 0
        _NaNAt.seen = []

    def __call__(self, batch):
        self.n += 1
        losses = self.inner(batch)
        if self.n in self.calls:
            losses["cls"] = losses["cls"] * float("nan")
        _NaNAt.seen.append(float(sum(v.detach() for v in losses.values())))
        return losses


def test_a_run_whose_every_step_is_non_finite_fails(tiny_world, tmp_path, monkeypatch):
    """Fewer steps than train.max_bad_steps, all non-finite: not a success (exit 0 before)."""
    import sadc.engine.run as run_mod

    monkeypatch.setattr(run_mod, "SupervisedObjective", lambda model, fwd: _NaNAt(SupervisedObjective(model, fwd), {1, 2, 3}))
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=3, eval_every=0, max_bad_steps=20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no torch warning about the schedule moving before the optimizer
        with pytest.raises(SadcError, match=r"all 3 steps .* non-finite loss.*nothing was learnt"):
            run_train(recipe)


def test_a_non_finite_last_step_still_ends_the_run_with_its_checkpoints(tiny_world, tmp_path, monkeypatch):
    import sadc.engine.run as run_mod

    monkeypatch.setattr(run_mod, "SupervisedObjective", lambda model, fwd: _NaNAt(SupervisedObjective(model, fwd), {4}))
    run_dir = run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=4, eval_every=0, save_every=100)))
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run_dir / name)
        assert ckpt["step"] == 4 and ckpt["finished"] and "mAP" in ckpt["metrics"]


class _Snapshots:
    """An objective that records the model's weights (parameters and buffers) at each call."""

    def __init__(self, inner, model):
        self.inner, self.model, self.seen = inner, model, []

    def __call__(self, batch):
        self.seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return self.inner(batch)


def test_ema_of_weights_is_evaluated_saved_and_resumed(tiny_world, tmp_path, monkeypatch):
    """best.pt holds the EMA of the per-step weights (computed here by hand); last.pt the raw
    weights and the EMA, so a resumed run ends with the same average."""
    import sadc.engine.run as run_mod

    decay, steps = 0.6, 5
    common = dict(steps=steps, eval_every=2, log_every=1, save_every=100, deterministic=True, ema_decay=decay)
    snaps: list[_Snapshots] = []

    def recording(model, fwd):
        snaps.append(_Snapshots(SupervisedObjective(model, fwd), model))
        return snaps[-1]

    monkeypatch.setattr(run_mod, "SupervisedObjective", recording)
    straight = run_train(recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path / "a", **common)))
    raw = [*snaps[0].seen[1:], load_checkpoint(straight / "last.pt")["model"]]  # weights after steps 1..5
    assert len(raw) == steps
    emas = [dict(raw[0])]  # the EMA after steps 1..5
    for weights in raw[1:]:
        emas.append({k: v * decay + weights[k] * (1 - decay) for k, v in emas[-1].items() if v.is_floating_point()})
    floats = list(emas[-1])
    best = load_checkpoint(straight / "best.pt")
    assert all(torch.allclose(best["model"][k], emas[best["step"] - 1][k], atol=1e-6) for k in floats)
    last = load_checkpoint(straight / "last.pt")["train"]["ema"]
    assert all(torch.allclose(last["module." + k], emas[-1][k], atol=1e-6) for k in floats)
    assert not torch.allclose(emas[-1][floats[0]], raw[-1][floats[0]])  # the average, not the last weights
    # evaluating under the EMA put the raw weights back: training continued from them
    assert all(torch.equal(snaps[0].seen[2][k], raw[1][k]) for k in floats)

    monkeypatch.setattr(run_mod, "SupervisedObjective", lambda model, fwd: InterruptAt(SupervisedObjective(model, fwd), 4))
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path / "b", **common))
    with pytest.raises(Interrupted):
        run_train(recipe)
    monkeypatch.undo()
    resumed = load_checkpoint(run_train(recipe, resume=True) / "last.pt")["train"]["ema"]
    assert all(torch.equal(resumed[k], last[k]) for k in last)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimizer_is_fused_on_cpu_and_steps_as_the_foreach_form_does(optimizer):
    from sadc.engine.trainer import build_optimizer
    from sadc.recipe.schema import TrainSection

    cfg = TrainSection(optimizer=optimizer, lr=0.01, weight_decay=0.05)
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Flatten(), torch.nn.Linear(144, 2)
    )
    plain_model, start = copy.deepcopy(fused_model), copy.deepcopy(fused_model)
    fused = build_optimizer(fused_model, cfg)
    assert all(group["fused"] for group in fused.param_groups)
    # the reference: torch's foreach form of the same update, with the same parameter groups
    decay = [p for p in plain_model.parameters() if p.ndim > 1]
    no_decay = [p for p in plain_model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    plain = (
        torch.optim.AdamW(groups, lr=0.01, foreach=True)
        if optimizer == "adamw"
        else torch.optim.SGD(groups, lr=0.01, momentum=cfg.momentum, foreach=True)
    )
    x, target = torch.randn(2, 3, 8, 8), torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    for _ in range(5):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            (model(x) - target).square().mean().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = [(a - b).abs().max().item() for a, b in zip(fused_model.parameters(), start.parameters(), strict=True)]
    assert min(moved) > 1e-3  # every parameter was updated: the comparison is not of two idle models


def test_the_optimizer_is_not_fused_where_torch_has_no_fused_kernel():
    from sadc.engine.trainer import build_optimizer
    from sadc.recipe.schema import TrainSection

    model = torch.nn.Linear(3, 2, device="meta")
    assert not any(group["fused"] for group in build_optimizer(model, TrainSection()).param_groups)


@pytest.mark.parametrize(("channels_last", "batched_loss"), [(False, False), (True, True)])
def test_training_forward_follows_the_train_section(tiny_spec, channels_last, batched_loss):
    """train and distill (through wrap_for_training) and the benchmarks build the trained forward with one function."""
    from sadc.engine.run import training_forward
    from sadc.models.detector import build_detector
    from sadc.recipe import TrainSection

    model = build_detector(tiny_spec).train()
    forward = training_forward(model, TrainSection(channels_last=channels_last, batched_loss=batched_loss))
    assert forward.detector is model and forward.channels_last is channels_last and model.batched_loss is batched_loss
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is channels_last

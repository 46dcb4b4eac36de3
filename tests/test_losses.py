"""Tests of sadc.distill.losses against independent references.

References: (1) the paper's equations written naively in float64 (explicit sigmoid,
log of ratios, no log-space tricks) and differentiated by autograd, on moderate
logits where that is accurate; (2) a numpy transcription of the authors' caffe2
forward and gradient kernels (sigmoid_adaptive_distillation_loss_op.cu) with their
LOSS_BETA = 1 - beta. Tolerance 1e-6 in float64 unless stated.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sadc.distill.losses import (
    adaptive_distillation_loss,
    adaptive_normalizer,
    distillation_loss,
    hard_to_mimic_loss,
    sigmoid_kl_loss,
)

TOL = 1e-6
GAMMAS = [0.0, 1.0, 2.0]
BETAS = [0.0, 1.0, 1.5]
TEMPERATURES = [1.0, 2.0]
FORMS = ["paper", "authors"]


def _moderate_logits(n: int = 257, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 logits in [-6, 6], student and teacher kept apart (no 0/0 at s == t)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g, dtype=torch.float64) * 12 - 6
    t = torch.rand(n, generator=g, dtype=torch.float64) * 12 - 6
    t = torch.where((s - t).abs() < 1e-2, t + 0.5, t)
    return s, t


def _naive_adl(s, t, *, gamma, beta, temperature, form, alpha=0.5):
    """The paper's formulas, transcribed literally in float64."""
    q = 1.0 / (1.0 + torch.exp(-t / temperature))
    p = 1.0 / (1.0 + torch.exp(-s / temperature))
    kl = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
    entropy = -(q * torch.log(q) + (1 - q) * torch.log(1 - q))
    adw = (1 - torch.exp(-(kl + beta * entropy))) ** gamma
    if form == "paper":
        base = kl
    else:
        base = -(alpha * q * torch.log(p) + (1 - alpha) * (1 - q) * torch.log(1 - p))
    return temperature**2 * adw * base


FLT_MIN = float(np.finfo(np.float32).tiny)


def _kernel_forward(x, pt, *, gamma, alpha, loss_beta):
    """SigmoidAdaptiveDistillLossKernel, per element, Np = 1, ignored mask all-true."""
    pos = (x >= 0).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    d_loss = (
        -x * (pt - pos)
        + np.log(np.maximum(FLT_MIN, 1 + np.exp(x - 2 * x * pos)))
        + loss_beta * (pt * np.log(pt) + (1 - pt) * np.log(1 - pt))
    )
    adaptive_target = 1 - np.exp(-d_loss)
    log_1mp = -x * pos - np.log(1.0 + np.exp(x - 2.0 * x * pos))
    return -(adaptive_target**gamma) * (pt * np.log(np.maximum(FLT_MIN, p)) * alpha + (1 - pt) * log_1mp * (1 - alpha))


def _kernel_gradient(x, pt, *, gamma, alpha, loss_beta):
    """SigmoidAdaptiveDistillLossGradientKernel, per element, Np = 1, d_loss = 1."""
    pos = (x >= 0).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    dl = -x * (pt - pos) + np.log(1 + np.exp(x - 2 * x * pos)) + loss_beta * (pt * np.log(pt) + (1 - pt) * np.log(1 - pt))
    exp_dl = np.exp(-dl)
    adaptive_target = 1 - exp_dl
    d_loss = alpha * pt * np.log(np.maximum(FLT_MIN, p)) + (1 - alpha) * (1 - pt) * (
        -x * pos - np.log(1.0 + np.exp(x - 2.0 * x * pos))
    )
    return -(
        -(pt - p) * gamma * adaptive_target ** (gamma - 1) * exp_dl * d_loss
        + adaptive_target**gamma * (alpha * (pt - p) - (1 - 2 * alpha) * (1 - pt) * p)
    )


def _value_and_grad(fn, s, t):
    s = s.clone().requires_grad_(True)
    value = fn(s, t)
    (grad,) = torch.autograd.grad(value.sum(), s)
    return value.detach(), grad


# --- against the float64 references -------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_matches_naive_float64_formula(gamma, beta, temperature, form):
    s, t = _moderate_logits()
    kw = dict(gamma=gamma, beta=beta, temperature=temperature, form=form)
    ours, ours_grad = _value_and_grad(lambda a, b: adaptive_distillation_loss(a, b, **kw), s, t)
    ref, ref_grad = _value_and_grad(lambda a, b: _naive_adl(a, b, **kw), s, t)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(ours_grad, ref_grad, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_authors_form_matches_caffe2_kernels(gamma, beta, temperature):
    """Value and gradient equal the authors' kernels with LOSS_BETA = 1 - beta.

    Their kernels take x = logits and pt = teacher probability; we feed x = s/T,
    pt = σ(t/T), so d/ds = (1/T)·d/dx, and their `scale` is T².
    """
    s, t = _moderate_logits(seed=1)
    alpha = 0.3  # not 0.5, so the alpha weighting is exercised
    x = (s / temperature).numpy()
    pt = torch.sigmoid(t / temperature).numpy()
    kw = dict(gamma=gamma, alpha=alpha, loss_beta=1.0 - beta)
    ref = temperature**2 * _kernel_forward(x, pt, **kw)
    ref_grad = temperature**2 * _kernel_gradient(x, pt, **kw) / temperature

    ours, ours_grad = _value_and_grad(
        lambda a, b: adaptive_distillation_loss(
            a, b, gamma=gamma, beta=beta, temperature=temperature, form="authors", alpha=alpha
        ),
        s,
        t,
    )
    np.testing.assert_allclose(ours.numpy(), ref, atol=TOL, rtol=TOL)
    # The kernel differentiates through ADW; this equality is what "gradient flows
    # through ADW" means here.
    np.testing.assert_allclose(ours_grad.numpy(), ref_grad, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gradcheck_finite_differences(form, gamma):
    s, t = _moderate_logits(n=12, seed=2)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: adaptive_distillation_loss(a, t, gamma=gamma, beta=1.0, temperature=2.0, form=form, alpha=0.25),
        (s,),
    )


# --- numerics at the extremes ---------------------------------------------------------


EXTREME_STUDENT = [-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4]
EXTREME_TEACHER = [-math.inf, -1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4, math.inf]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_finite_values_and_gradients_at_extremes_float32(form, gamma):
    s0, t0 = torch.meshgrid(torch.tensor(EXTREME_STUDENT), torch.tensor(EXTREME_TEACHER), indexing="ij")
    for beta in (0.0, 1.0):
        for temperature in (1.0, 2.0):
            s = s0.clone().requires_grad_(True)
            t = t0.clone().requires_grad_(True)  # must get no gradient
            loss = adaptive_distillation_loss(s, t, gamma=gamma, beta=beta, temperature=temperature, form=form)
            assert loss.dtype == torch.float32
            assert torch.isfinite(loss).all(), (beta, temperature, loss)
            grad, teacher_grad = torch.autograd.grad(loss.sum(), (s, t), allow_unused=True)
            assert torch.isfinite(grad).all(), (beta, temperature, grad)
            assert teacher_grad is None  # the teacher is detached


def test_exact_teacher_probabilities_zero_and_one():
    s = torch.tensor([-100.0, 100.0, -100.0, 100.0, 3.0])
    t = torch.tensor([math.inf, -math.inf, -math.inf, math.inf, -math.inf])
    loss = adaptive_distillation_loss(s, t, gamma=2.0, beta=1.0)
    # q = 1, p = σ(-100): KL = -log p = 100, H = 0, ADW = (1 - e^-100)^2 = 1.
    torch.testing.assert_close(loss[:2], torch.tensor([100.0, 100.0]))
    assert loss[2:4].abs().max() < 1e-30  # student agrees with a certain teacher
    kl = torch.nn.functional.softplus(torch.tensor(3.0))  # q = 0: KL = -log(1 - p)
    torch.testing.assert_close(loss[4], kl * (1 - torch.exp(-kl)) ** 2)
    assert torch.isfinite(sigmoid_kl_loss(s, t)).all()


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0])
def test_student_equals_teacher_gives_zero_loss_and_gradient(gamma):
    t = torch.linspace(-20, 20, 41)
    for beta in (0.0, 1.0):
        s = t.clone().requires_grad_(True)
        loss = adaptive_distillation_loss(s, t, gamma=gamma, beta=beta)
        assert torch.equal(loss.detach(), torch.zeros_like(t))
        (grad,) = torch.autograd.grad(loss.sum(), s)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, torch.zeros_like(t), atol=1e-6, rtol=0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("gamma", [0.01, 0.1, 0.5])
def test_small_gamma_with_nearly_agreeing_saturated_logits(form, gamma):
    """ADW's base is denormal here; a bare pow would give gamma·b^(gamma-1) = inf."""
    t = torch.tensor([-100.0, -90.0, -80.0, 80.0, 90.0, 100.0]).repeat_interleave(7)
    s = t + torch.tensor([-1e-2, -1e-3, -1e-5, 0.0, 1e-5, 1e-3, 1e-2]).repeat(6)
    for beta in (0.0, 1.0):
        s_ = s.clone().requires_grad_(True)
        loss = adaptive_distillation_loss(s_, t, gamma=gamma, beta=beta, form=form)
        (grad,) = torch.autograd.grad(loss.sum(), s_)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_half_precision_inputs_are_computed_in_float32():
    s = torch.tensor([-100.0, 0.0, 60.0], dtype=torch.bfloat16)
    t = torch.tensor([100.0, 0.0, -60.0], dtype=torch.float16)
    loss = adaptive_distillation_loss(s, t)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()


def test_half_precision_student_gets_its_own_dtype_back():
    s = torch.tensor([-100.0, 0.0, 60.0, 1.5], dtype=torch.bfloat16, requires_grad=True)
    t = torch.tensor([100.0, 0.0, -60.0, -1.0], dtype=torch.float16)
    adaptive_distillation_loss(s, t).sum().backward()
    ref = s.detach().float().requires_grad_(True)
    adaptive_distillation_loss(ref, t.float()).sum().backward()
    assert s.grad.dtype == torch.bfloat16 and torch.equal(s.grad, ref.grad.to(torch.bfloat16))


@pytest.mark.parametrize("form", ["paper", "authors"])
def test_adl_keeps_one_logits_sized_tensor_for_backward(form):
    """The gradient is computed in forward: the graph holds it, not both logit tensors or
    the formula's intermediates; backward scales it by grad_out."""
    s = torch.randn(2, 30, 4, requires_grad=True)
    t = torch.randn(2, 30, 4)
    loss = adaptive_distillation_loss(s, t, gamma=2.0, form=form)
    saved = loss.grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].shape == s.shape
    weights = torch.rand_like(loss)
    (grad,) = torch.autograd.grad((loss * weights).sum(), s)
    torch.testing.assert_close(grad, saved[0] * weights, rtol=0, atol=0)


# --- invariants -----------------------------------------------------------------------


def test_sigmoid_kl_is_adl_with_gamma_zero_and_hard_to_mimic_is_beta_zero():
    s, t = _moderate_logits(seed=3)
    for temperature in TEMPERATURES:
        torch.testing.assert_close(
            sigmoid_kl_loss(s, t, temperature=temperature),
            adaptive_distillation_loss(s, t, gamma=0.0, temperature=temperature),
            atol=0,
            rtol=0,
        )
    torch.testing.assert_close(
        hard_to_mimic_loss(s, t, gamma=1.5, form="authors", alpha=0.2),
        adaptive_distillation_loss(s, t, gamma=1.5, beta=0.0, form="authors", alpha=0.2),
        atol=0,
        rtol=0,
    )


@pytest.mark.parametrize("form", FORMS)
def test_reductions(form):
    s, t = _moderate_logits(n=60, seed=4)
    s, t = s.reshape(3, 4, 5), t.reshape(3, 4, 5)
    none = adaptive_distillation_loss(s, t, form=form, reduction="none")
    assert none.shape == s.shape
    for reduction, expected in [("sum", none.sum()), ("mean", none.mean())]:
        got = adaptive_distillation_loss(s, t, form=form, reduction=reduction)
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(sigmoid_kl_loss(s, t, reduction="sum"), sigmoid_kl_loss(s, t).sum())
    with pytest.raises(ValueError, match="reduction"):
        adaptive_distillation_loss(s, t, reduction="avg")


def test_argument_errors():
    s, t = _moderate_logits(n=4)
    with pytest.raises(ValueError, match="shape"):
        adaptive_distillation_loss(s, t[:3])
    with pytest.raises(ValueError, match="form"):
        adaptive_distillation_loss(s, t, form="caffe")
    with pytest.raises(ValueError, match="gamma"):
        adaptive_distillation_loss(s, t, gamma=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        sigmoid_kl_loss(s, t, temperature=0.0)


@settings(max_examples=60, deadline=None)
@given(
    logits=arrays(np.float32, (2, 24), elements=st.floats(-100, 100, width=32, allow_nan=False)),
    gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
    beta=st.floats(0.0, 2.0),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_property_paper_adl_nonnegative_and_finite(logits, gamma, beta, temperature):
    s = torch.from_numpy(logits[0]).requires_grad_(True)
    t = torch.from_numpy(logits[1])
    loss = adaptive_distillation_loss(s, t, gamma=gamma, beta=beta, temperature=temperature)
    assert torch.isfinite(loss).all()
    assert (loss >= 0).all()
    (grad,) = torch.autograd.grad(loss.sum(), s)
    assert torch.isfinite(grad).all()


# --- normalisers and the criterion ---------------------------------------------------


def test_adaptive_normalizer_against_float64_sum():
    t = torch.linspace(-8, 8, 50, dtype=torch.float32).reshape(5, 10).requires_grad_(True)
    t64 = t.detach().double().numpy()
    for theta, temperature in [(1.8, 1.0), (1.8, 2.0), (1.0, 1.0), (3.0, 0.5)]:
        ref = np.sum((1.0 / (1.0 + np.exp(-t64 / temperature))) ** theta)
        got = adaptive_normalizer(t, theta=theta, temperature=temperature)
        assert got.shape == () and not got.requires_grad
        assert abs(got.item() - ref) < 1e-5 * ref
    torch.testing.assert_close(adaptive_normalizer(t, theta=1.0), torch.sigmoid(t.detach()).sum())


def test_adaptive_normalizer_is_clamped_to_one():
    t = torch.full((3, 4), -20.0)  # the teacher sees nothing: Σ σ^θ ≈ 1e-15
    assert adaptive_normalizer(t).item() == 1.0
    assert adaptive_normalizer(torch.empty(0, 4)).item() == 1.0


def _dense_logits():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 3
    t = torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 3
    mask = torch.tensor([[True, False, True], [False, False, True]])
    return s, t, mask


def test_distillation_loss_adaptive_normalizer_by_hand():
    s, t, mask = _dense_logits()
    kw = dict(gamma=2.0, beta=1.0, temperature=1.0)
    per = adaptive_distillation_loss(s, t, **kw)
    out = distillation_loss(s, t, **kw, theta=1.8)
    assert set(out) == {"distill"} and out["distill"].shape == ()
    norm_all = max(sum(float(torch.sigmoid(v)) ** 1.8 for v in t.flatten()), 1.0)
    torch.testing.assert_close(out["distill"], per.sum() / norm_all)

    masked = distillation_loss(s, t, **kw, theta=1.8, anchor_mask=mask)["distill"]
    kept = [(n, a) for n in range(2) for a in range(3) if mask[n, a]]
    total = sum(per[n, a].sum() for n, a in kept)
    norm = max(sum(float(torch.sigmoid(v)) ** 1.8 for n, a in kept for v in t[n, a]), 1.0)
    torch.testing.assert_close(masked, total / norm)


def test_distillation_loss_positives_normalizer_by_hand():
    s, t, mask = _dense_logits()
    per_kl = sigmoid_kl_loss(s, t, temperature=2.0)
    kw = dict(loss="kl", temperature=2.0, normalizer="positives")
    full = distillation_loss(s, t, **kw, num_positives=4)["distill"]
    torch.testing.assert_close(full, per_kl.sum() / 4)
    zero = distillation_loss(s, t, **kw, num_positives=torch.tensor(0))["distill"]
    torch.testing.assert_close(zero, per_kl.sum())  # max(0, 1) = 1
    counted = distillation_loss(s, t, **kw, anchor_mask=mask)["distill"]  # defaults to mask.sum()
    torch.testing.assert_close(counted, per_kl[mask].sum() / 3)
    with pytest.raises(ValueError, match="num_positives"):
        distillation_loss(s, t, **kw)


def test_distillation_loss_gradient_reaches_student_only():
    s, t, mask = _dense_logits()
    s.requires_grad_(True)
    t.requires_grad_(True)
    distillation_loss(s, t, anchor_mask=mask)["distill"].backward()
    assert t.grad is None
    assert torch.all(s.grad[~mask] == 0) and torch.any(s.grad[mask] != 0)


def test_distillation_loss_rejects_bad_shapes():
    s, t, mask = _dense_logits()
    with pytest.raises(ValueError, match=r"\[N, A, C\]"):
        distillation_loss(s.flatten(), t.flatten())
    with pytest.raises(ValueError, match="anchor_mask"):
        distillation_loss(s, t, anchor_mask=mask.T)
    with pytest.raises(ValueError, match="normalizer"):
        distillation_loss(s, t, normalizer="count")

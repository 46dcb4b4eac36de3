"""Distillation losses on sigmoid classification logits: ADL and its baselines.

Implements the Adaptive Distillation Loss of Tang et al., "Learning Efficient
Detector with Semi-supervised Adaptive Distillation", arXiv:1901.00366 (2019), in
the per-anchor, per-class binary (sigmoid) form used by RetinaNet, plus the baselines
the paper compares against: plain sigmoid KL distillation, the hard-to-mimic-only
ablation (beta = 0). Hard targets (the teacher's thresholded boxes) are made with the
teacher, in sadc.distill.teacher.

Everything is pure torch and works on logits of any shape; `distillation_loss` is the
criterion the trainer calls on dense head outputs [N, A, C].

Reference code: github.com/Tangshitao/Semi-supervised-Adaptive-Distillation, files
caffe2/modules/detectron/sigmoid_adaptive_distillation_loss_op.cu (loss and gradient
kernels), pow_sum_op.cu (adaptive normaliser) and detectron/lib/modeling/
retinanet_heads.py (`add_distill_loss`, the wiring). Where this module differs from
that code it says so next to the difference.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "adaptive_distillation_loss",
    "adaptive_normalizer",
    "distillation_loss",
    "hard_to_mimic_loss",
    "sigmoid_kl_loss",
]

Reduction = Literal["none", "sum", "mean"]
Form = Literal["paper", "authors"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision logs of probabilities near 0/1 lose everything; the loss is cheap.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


def _binary_terms(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Log-space pieces shared by every loss: (q, 1-q, log p, log(1-p), KL, H(q)).

    The teacher is detached: it is a target, never trained through this loss.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dtype = _compute_dtype(student_logits.dtype)
    s = student_logits.to(dtype)
    t = teacher_logits.detach().to(dtype)
    if temperature != 1.0:  # the elementwise passes are the loss' whole cost: none is spent on /1
        s, t = s / temperature, t / temperature

    log_p, log_1mp = F.logsigmoid(s), F.logsigmoid(-s)  # finite for any finite s
    q, q1 = torch.sigmoid(t), torch.sigmoid(-t)  # 1 - q without cancellation
    # log q is -inf only where q is 0 (a teacher logit of -inf), and log(1-q) only where
    # 1-q is 0 (+inf). Clamped to the lowest float, every product below with q or 1-q is
    # then 0·finite = 0 there rather than 0·inf = NaN, in one pass where a `where` takes
    # three; the gradient, taken with respect to the student only, is unaffected.
    lowest = torch.finfo(dtype).min
    log_q, log_1mq = F.logsigmoid(t).clamp_min(lowest), F.logsigmoid(-t).clamp_min(lowest)
    entropy = -(q * log_q + q1 * log_1mq)
    # Grouped as differences of logs, KL is exactly 0 where s == t; elsewhere its two
    # terms can still round to a slightly negative sum, which would make the ADW base
    # negative (NaN under a fractional power): hence the clamp.
    kl = q * (log_q - log_p) + q1 * (log_1mq - log_1mp)
    return q, q1, log_p, log_1mp, kl.clamp_min(0.0), entropy


def _adaptive_weight(kl: Tensor, entropy: Tensor, gamma: float, beta: float) -> Tensor:
    """ADW = (1 - exp(-(KL + beta·H)))^gamma, with ADW ≡ 1 for gamma = 0.

    Gradients flow through it (as in the authors' gradient kernel). Near a base of 0
    (student ≈ teacher where beta·H ≈ 0, e.g. both logits saturated) the pow
    derivative gamma·b^(gamma-1) overflows for gamma < 1 and poisons the gradient
    (float32, gamma <= 0.1, logits ±100 apart by 1e-5 suffice). Bases below the
    smallest normal float are therefore treated as 0 with zero gradient (double
    `where`, so no inf·0 reaches autograd); the forward error is ADW·KL <= tiny.
    gamma = 1 (the quickstart recipe's) has no such derivative and skips the guard.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if gamma == 0:
        return torch.ones_like(kl)
    return _adw(_adw_base(kl, entropy, beta)[1], gamma)


def _adw_base(kl: Tensor, entropy: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """u = KL + beta·H and the ADW base b = 1 - exp(-u) (expm1: accurate for small u)."""
    u = kl + entropy if beta == 1.0 else kl + beta * entropy
    return u, -torch.expm1(-u)


def _guarded(base: Tensor) -> tuple[Tensor, Tensor]:
    """(ok, safe): where b is at least the smallest normal float, and b with 1 elsewhere, so
    that no power of b overflows or sends inf·0 into a gradient."""
    ok = base > torch.finfo(base.dtype).tiny
    return ok, torch.where(ok, base, torch.ones_like(base))


def _adw(base: Tensor, gamma: float, guard: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """b^gamma for gamma > 0, 0 (with zero gradient) where b is below the smallest normal
    float; ``guard``: :func:`_guarded` of ``base`` when the caller has it already."""
    if gamma == 1.0:
        # b^1 needs no guard (the guard is for gamma < 1), and b >= 0 since KL >= 0 (clamped),
        # H >= 0 and beta >= 0: the default recipe's ADW in one pass instead of five.
        return base
    ok, safe = guard if guard is not None else _guarded(base)
    return torch.where(ok, safe.pow(gamma), torch.zeros_like(base))


def adaptive_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    gamma: float = 2.0,
    beta: float = 1.0,
    temperature: float = 1.0,
    form: Form = "paper",
    alpha: float = 0.5,
    reduction: Reduction = "none",
) -> Tensor:
    """Adaptive Distillation Loss (ADL) per element of sigmoid logits.

    Tang et al. 2019, arXiv:1901.00366, the ADW and ADL definitions of the section
    "Adaptive Distillation Loss". With q = σ(t/T) (teacher) and p = σ(s/T) (student),
    elementwise over any shape:

        KL   = q·log(q/p) + (1-q)·log((1-q)/(1-p))          hard-to-mimic term
        H(q) = -q·log q - (1-q)·log(1-q)                     hard-to-learn term
        ADW  = (1 - exp(-(KL + beta·H(q))))^gamma
        form="paper":   ADL = T²·ADW·KL
        form="authors": ADL = T²·ADW·(alpha·q·(-log p) + (1-alpha)·(1-q)·(-log(1-p)))

    The "authors" form transcribes their caffe2 kernel
    (sigmoid_adaptive_distillation_loss_op.cu), which weights an alpha-balanced binary
    cross-entropy by ADW instead of KL. Its ADW argument is BCE(q, p) + LOSS_BETA·(-H)
    = KL + (1 - LOSS_BETA)·H, so their LOSS_BETA is 1 - beta here; their default
    LOSS_BETA = 0 is beta = 1. Their kernel evaluates q·log q unclamped (NaN at q = 0
    or 1); here 0·log 0 = 0. In their code T only scales the loss by T² (logits are
    not divided by T); the released recipe uses T = 1, where both agree.

    Gradient: w.r.t. `student_logits` only (the teacher is detached), and through
    ADW as well as through KL/BCE: the authors' hand-written gradient kernel
    differentiates the whole product ADW·BCE (d ADW/dx = gamma·b^(gamma-1)·e^(-x)·(p-q)
    appears in it), and autograd here reproduces it (tests/test_losses.py checks
    the kernel's formula).

    Numerics: computed in log space (logsigmoid), so values and gradients are finite
    for logits of any finite magnitude (±1e4 in float32) and for teacher logits ±inf
    (q exactly 0 or 1). float16/bfloat16 inputs are computed and returned in float32.

    Args:
        student_logits: any shape, float; the trained side.
        teacher_logits: same shape; treated as a constant.
        gamma: focusing exponent, >= 0; gamma = 0 gives ADW ≡ 1 (plain KL/BCE).
        beta: weight of the teacher entropy (hard-to-learn); 0 gives hard-to-mimic only.
        temperature: T > 0, dividing both logits; the loss is multiplied by T².
        form: "paper" (ADW·KL, default) or "authors" (ADW·alpha-weighted BCE).
        alpha: positive/negative balance of the "authors" form; unused by "paper".
        reduction: "none" (same shape as the inputs), "sum" or "mean" (scalars).
    """
    if form not in ("paper", "authors"):
        raise ValueError(f"form must be 'paper' or 'authors', got {form!r}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if student_logits.requires_grad:
        loss = _ADL.apply(student_logits, teacher_logits.detach(), gamma, beta, temperature, form, alpha)
    else:
        loss = _adl(student_logits, teacher_logits, gamma, beta, temperature, form, alpha, with_grad=False)[0]
    return _reduce(loss, reduction)


class _ADL(torch.autograd.Function):
    """ADL whose forward also computes the gradient, and keeps only that.

    The derivative of each element's loss with respect to its student logit is built from
    the same log-space pieces as the loss (q, p, KL, H, ADW), so the forward computes it
    while it has them, and backward only scales it by ``grad_out``. Recomputing the pieces
    in backward, as this class did before, repeated ~25 elementwise passes over the
    [N, A, C] logits (about a third of the loss' time); autograd through the formula would
    save about ten intermediates. Saved: one tensor the size of the logits. With s' = s/T,
    u = KL + beta·H:

        dKL/ds      = (p - q) / T
        dADW/ds     = gamma·b^(gamma-1)·e^(-u) · (p - q) / T,   b = 1 - e^(-u)  (0 where b ~ 0)
        paper:   dL/ds = T²·(ADW + KL·dADW/dKL)·(p - q)/T
        authors: dL/ds = T²·(ADW·(-alpha·q·(1-p) + (1-alpha)·(1-q)·p) + BCE·dADW/dKL·(p - q))/T

    which is the authors' gradient kernel (tests compare it with autograd of the float64
    formula and with a transcription of their kernel).
    """

    @staticmethod
    def forward(ctx, student, teacher, gamma, beta, temperature, form, alpha):
        with torch.no_grad():
            loss, grad = _adl(student, teacher, gamma, beta, temperature, form, alpha, with_grad=True)
        ctx.save_for_backward(grad)
        ctx.dtype = student.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return (grad * grad_out).to(ctx.dtype), None, None, None, None, None, None


def _adl(
    student: Tensor,
    teacher: Tensor,
    gamma: float,
    beta: float,
    temperature: float,
    form: str,
    alpha: float,
    *,
    with_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Elementwise ADL (times T²) and, ``with_grad``, its derivative d loss / d student (else None).

    The loss is the same bits either way; the gradient reuses the loss' pieces and shares
    the ADW's guard with the ADW's derivative.
    """
    q, q1, log_p, log_1mp, kl, entropy = _binary_terms(student, teacher, temperature)
    base_loss = kl if form == "paper" else -(alpha * q * log_p + (1.0 - alpha) * q1 * log_1mp)
    grad = None
    if not with_grad:
        adw = _adaptive_weight(kl, entropy, gamma, beta)
    else:
        s = student.to(_compute_dtype(student.dtype))
        p = torch.sigmoid(s / temperature if temperature != 1.0 else s)
        diff = p - q  # d KL / d s'
        if gamma == 0:
            adw, dadw = torch.ones_like(kl), torch.zeros_like(kl)
        else:
            u, base = _adw_base(kl, entropy, beta)
            if gamma == 1.0:  # d b / d u = e^(-u): finite everywhere, no guard needed
                adw, dadw = base, torch.exp(-u)
            else:
                ok, safe = guard = _guarded(base)  # once, for ADW and its derivative
                adw = _adw(base, gamma, guard)
                dadw = torch.where(ok, gamma * safe.pow(gamma - 1.0) * torch.exp(-u), torch.zeros_like(base))
        if form == "paper":
            grad = (adw + kl * dadw) * diff
        else:
            dbce = -alpha * q * (1.0 - p) + (1.0 - alpha) * q1 * p
            grad = adw * dbce + base_loss * dadw * diff
    loss = adw * base_loss
    if temperature != 1.0:
        loss = loss * temperature**2
        grad = None if grad is None else grad * temperature  # T² · (1/T) from ds'/ds
    return loss, grad


def hard_to_mimic_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    gamma: float = 2.0,
    temperature: float = 1.0,
    form: Form = "paper",
    alpha: float = 0.5,
    reduction: Reduction = "none",
) -> Tensor:
    """ADL with beta = 0: ADW = (1 - exp(-KL))^gamma, the paper's hard-to-mimic-only ablation.

    The teacher-entropy (hard-to-learn) term is dropped; everything else, shapes and
    numerics included, is `adaptive_distillation_loss`.
    """
    return adaptive_distillation_loss(
        student_logits,
        teacher_logits,
        gamma=gamma,
        beta=0.0,
        temperature=temperature,
        form=form,
        alpha=alpha,
        reduction=reduction,
    )


def sigmoid_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    reduction: Reduction = "none",
) -> Tensor:
    """Plain distillation baseline: T²·KL(σ(t/T) || σ(s/T)) per element (ADL with ADW ≡ 1).

    Same shapes, gradient (student only) and numerics as `adaptive_distillation_loss`.
    """
    *_, kl, _ = _binary_terms(student_logits, teacher_logits, temperature)
    return _reduce(kl * temperature**2, reduction)


def adaptive_normalizer(teacher_logits: Tensor, *, theta: float = 1.8, temperature: float = 1.0) -> Tensor:
    """The authors' "adaptive normalizer": max(1, Σ σ(t/T)^theta) over all elements.

    Replaces the positive-anchor count of focal loss, which unlabeled images do not
    have: the teacher's confident scores stand in for positives, and theta > 1
    discounts the mass of the many low-score background anchors. theta = 1.8 is
    LOGITS_POWER of the released recipe. Their PowSum op sums σ(t)^theta over every
    FPN level and image on a GPU; the loss kernel then divides by max(normalizer, 1)
    (`Np = max(weight_pos[0], 1.0)`), and so does this: an image where the teacher
    sees nothing has a sum near 0, which would blow the loss up by orders of magnitude.

    Args:
        teacher_logits: any shape; detached.
        theta: the power, > 0.
        temperature: T > 0 dividing the logits (the authors use raw logits, i.e. T = 1).

    Returns:
        A 0-dim tensor (float32, or float64 for float64 input), >= 1, without gradient.
    """
    if not theta > 0:
        raise ValueError(f"theta must be > 0, got {theta}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = teacher_logits.detach().to(_compute_dtype(teacher_logits.dtype))
    return torch.sigmoid(t / temperature).pow(theta).sum().clamp_min(1.0)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    loss: Literal["adl", "kl"] = "adl",
    gamma: float = 2.0,
    beta: float = 1.0,
    temperature: float = 1.0,
    theta: float = 1.8,
    form: Form = "paper",
    alpha: float = 0.5,
    normalizer: Literal["adaptive", "positives"] = "adaptive",
    anchor_mask: Tensor | None = None,
    num_positives: Tensor | int | None = None,
) -> dict[str, Tensor]:
    """Distillation criterion on dense classification logits: {"distill": Σ loss / normaliser}.

    Args:
        student_logits: [N, A, C] sigmoid logits of the student.
        teacher_logits: [N, A, C] logits of the teacher over the same anchor grid.
        loss: "adl" (`adaptive_distillation_loss` with gamma, beta, form, alpha) or
            "kl" (`sigmoid_kl_loss`; gamma, beta, form, alpha unused).
        temperature: T for both losses and for the adaptive normaliser.
        theta: power of the adaptive normaliser.
        normalizer: "adaptive": `adaptive_normalizer` of the teacher over the counted
            anchors, >= 1; "positives": max(num_positives, 1).
        anchor_mask: [N, A] bool, or None for all anchors. Only anchors where it is
            True count, in the loss sum and in the adaptive normaliser (the authors'
            kernel likewise drops anchors labelled IGNORED_LABEL, but their
            normaliser sums over all anchors).
        num_positives: number to divide by with normalizer="positives" (int or
            0-dim tensor; for DDP pass the count you want, e.g. all-reduced). If None,
            anchor_mask.sum() is used, and anchor_mask is then required.

    Returns:
        {"distill": 0-dim tensor}, differentiable w.r.t. student_logits only. The
        sum is over the whole batch; the trainer applies the recipe's weight.
    """
    if student_logits.dim() != 3:
        raise ValueError(f"distillation_loss expects logits [N, A, C], got {tuple(student_logits.shape)}")
    if loss == "adl":
        per_element = adaptive_distillation_loss(
            student_logits,
            teacher_logits,
            gamma=gamma,
            beta=beta,
            temperature=temperature,
            form=form,
            alpha=alpha,
        )
    elif loss == "kl":
        per_element = sigmoid_kl_loss(student_logits, teacher_logits, temperature=temperature)
    else:
        raise ValueError(f"loss must be 'adl' or 'kl', got {loss!r}")

    counted_teacher = teacher_logits
    if anchor_mask is not None:
        if anchor_mask.shape != student_logits.shape[:2] or anchor_mask.dtype != torch.bool:
            raise ValueError(
                f"anchor_mask must be a bool tensor [N, A] = {tuple(student_logits.shape[:2])}, "
                f"got {anchor_mask.dtype} {tuple(anchor_mask.shape)}"
            )
        per_element = per_element[anchor_mask]  # (N, A, C) -> (M, C)
        counted_teacher = teacher_logits[anchor_mask]
    total = per_element.sum()

    if normalizer == "adaptive":
        norm = adaptive_normalizer(counted_teacher, theta=theta, temperature=temperature)
    elif normalizer == "positives":
        if num_positives is None:
            if anchor_mask is None:
                raise ValueError("normalizer='positives' needs num_positives or anchor_mask to count")
            num_positives = anchor_mask.sum()
        norm = torch.as_tensor(num_positives, device=total.device).detach()
        norm = norm.to(total.dtype).clamp_min(1.0)
    else:
        raise ValueError(f"normalizer must be 'adaptive' or 'positives', got {normalizer!r}")
    return {"distill": total / norm.to(total.device)}

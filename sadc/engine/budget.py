"""Does a step fit? The batch against the dataset, and its activations against the memory here.

Checked before the first step, so ``data.batch_size=1000000000`` is one line in a
second, not memory growing until the machine swaps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sadc.engine.machine import available_memory
from sadc.errors import SadcError


def activation_bytes(forward: nn.Module, input_size: tuple[int, int]) -> int:
    """Bytes of the outputs of every leaf module for one uint8 [1, 3, H, W] image in train mode.

    Runs a copy of ``forward`` whose parameters and buffers live on the meta device
    (shapes only: no memory, no arithmetic, well under a second); ``forward`` itself is
    not run, since modules such as torchvision's AnchorGenerator move cached tensors to
    the device they last saw. In-place modules are not counted twice. Training keeps
    roughly these tensors for the backward pass, so this is an estimate of activation
    memory, not a bound: gradients, optimiser state and allocator slack come on top.
    """
    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if getattr(module, "inplace", False):
            return
        for out in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(out, torch.Tensor):
                total += out.numel() * out.element_size()

    # deepcopy with every parameter and buffer pre-mapped to a meta tensor: copies the structure, not the weights
    memo: dict[int, object] = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in forward.parameters()
    }
    memo.update({id(b): torch.empty_like(b, device="meta") for b in forward.buffers()})
    clone = copy.deepcopy(forward, memo).train()
    for m in clone.modules():
        if not any(True for _ in m.children()):
            m.register_forward_hook(count)
    with torch.no_grad():  # shapes only; nothing to record for autograd
        clone(torch.empty((1, 3, *input_size), dtype=torch.uint8, device="meta"))
    return total


def check_batch_size(
    sets: list[tuple[str, int, int]],
    forward: nn.Module,
    input_size: tuple[int, int],
    device: torch.device,
    *,
    together: bool = True,
) -> None:
    """Raise one-line :class:`SadcError` when a step cannot work here.

    ``sets``: (what, images per step from it, images in it), e.g. ``("data.train", 16,
    118287)``. A batch larger than its dataset is refused; so is a step whose estimated
    activations (:func:`activation_bytes`) exceed the memory available on ``device``.
    ``together``: the sets' images share one forward pass (False: alternate steps, the
    largest counts). An estimate that cannot be made (an exotic module on the meta
    device) skips that part.
    """
    for what, per_step, size in sets:
        if per_step > size:
            raise SadcError(
                f"{per_step} images per step from {what}, which has {size}: a batch larger than its dataset repeats images "
                f"within one step; lower data.batch_size (at most {size})"
            )
    counts = [per_step for _, per_step, _ in sets]
    images = sum(counts) if together else max(counts, default=0)
    free = available_memory(str(device))
    if free is None or images == 0:
        return
    try:
        per_image = activation_bytes(forward, input_size)
    except Exception:  # an estimate; the step itself will say what is wrong
        return
    if per_image * images > free:
        fits = free // max(per_image, 1)
        h, w = input_size
        raise SadcError(
            f"data.batch_size: {images} images per step need about {_size(per_image * images)} of activations "
            f"({_size(per_image)} per {h}x{w} image, estimated) but {_size(free)} is available on "
            f"{device.type}; lower data.batch_size (about {fits} fit) or the model's input_size"
        )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

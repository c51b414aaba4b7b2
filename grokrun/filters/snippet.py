"""Drop-in replacements for the functions of the published Grokfast snippet: same arguments, same returned state
to feed back, same numbers (to the last bit: their rounding is kept, not EMAFilter's fused one).

    grads = None
    for batch in data:
        loss.backward(); grads = gradfilter_ema(model, grads, alpha=0.98, lamb=2.0); optimizer.step()
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor, nn


def gradfilter_ema(m: nn.Module, grads: dict[str, Tensor] | None = None, alpha: float = 0.98,
                   lamb: float = 2.0) -> dict[str, Tensor]:
    """Grokfast's ``gradfilter_ema``: returns the EMA state (by parameter name) to pass back next call."""
    import torch

    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad and p.grad is not None]
    if grads is None:
        grads = {}
    # The published function seeds the average with g and then applies the update to it, so on the
    # first call mu = g*alpha + g*(1-alpha) (equal to g up to rounding); do the same for the same numbers.
    for n, p in named:
        if n not in grads:
            grads[n] = p.grad.detach().clone()
    mus = [grads[n] for n, _ in named]
    gs = [p.grad for _, p in named]
    if mus:
        torch._foreach_mul_(mus, alpha)
        torch._foreach_add_(mus, torch._foreach_mul(gs, 1.0 - alpha))
        torch._foreach_add_(gs, torch._foreach_mul(mus, lamb))
    return grads


def gradfilter_ma(m: nn.Module, grads: dict[str, deque] | None = None, window_size: int = 100,
                  lamb: float = 5.0, filter_type: str = "mean", warmup: bool = True,
                  trigger: bool = False) -> dict[str, deque]:
    """Grokfast's ``gradfilter_ma``: returns the window (by parameter name, a deque each) to pass back.

    As published, ``trigger=True`` only fills the window, and only while ``warmup`` is on; the sum is
    re-added from the deque every call, in the same order, so the numbers match to the last bit and the
    cost grows with the window. ``MAFilter`` does the same filtering in O(1) per step.
    """
    if filter_type not in ("mean", "sum"):
        raise ValueError(f"filter_type must be 'mean' or 'sum', got {filter_type!r}")
    if grads is None:
        grads = {}
    for n, p in m.named_parameters():
        if not (p.requires_grad and p.grad is not None):
            continue
        window = grads.setdefault(n, deque(maxlen=window_size))
        window.append(p.grad.detach().clone())
        if not warmup or (len(window) == window_size and not trigger):
            avg = sum(window)
            if filter_type == "mean":
                avg = avg / len(window)
            p.grad.add_(avg * lamb)
    return grads

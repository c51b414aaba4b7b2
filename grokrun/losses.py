"""Classification losses, one home: cross-entropy over softmax or StableMax, in a chosen precision.

    loss = classification_loss(logits, y, kind="stablemax", dtype=torch.float64)

StableMax (Prieto et al. 2025, "Grokking at the edge of numerical stability") replaces exp in the softmax by
s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0 (continuous, with a continuous first derivative, at 0), and
normalizes: p_i = s(x_i) / sum_j s(x_j). It grows linearly rather than exponentially, so the probability of
the right class does not round to exactly 1 (a zero loss, "softmax collapse") as soon in float32. ``dtype``
computes the loss in that precision (their float64 softmax), whatever the model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("softmax", "stablemax")


def stablemax_s(x: Tensor) -> Tensor:
    """s(x): x + 1 for x >= 0, 1 / (1 - x) below. Each branch is fed only its own half of x (clamped), so the
    branch not taken contributes no inf or NaN to the gradient."""
    return torch.where(x >= 0, x.clamp(min=0) + 1, 1 / (1 - x.clamp(max=0)))


def log_stablemax(x: Tensor, dim: int = -1) -> Tensor:
    s = stablemax_s(x)
    return torch.log(s) - torch.log(s.sum(dim, keepdim=True))


def classification_loss(logits: Tensor, y: Tensor, kind: str = "softmax", dtype: torch.dtype | None = None,
                        reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits`` (N, C) against the labels ``y`` over softmax or StableMax, computed in ``dtype``
    (None: the logits' own, at least float32)."""
    logits = logits.to(dtype or torch.promote_types(logits.dtype, torch.float32))
    if kind == "softmax":
        return F.cross_entropy(logits, y, reduction=reduction)
    return F.nll_loss(log_stablemax(logits), y, reduction=reduction)


def collapsed(logits: Tensor, y: Tensor, kind: str = "softmax") -> Tensor:
    """How many examples have a float32 loss (softmax or StableMax cross-entropy) of exactly 0, the right class's
    probability rounded to 1: Prieto et al.'s measure of softmax collapse, such examples giving no gradient."""
    return (classification_loss(logits.float(), y, kind, torch.float32, reduction="none") == 0).sum()


PRECISIONS = {"auto": None, "float32": torch.float32, "float64": torch.float64}


def precision(name: str) -> torch.dtype | None:
    """--softmax-dtype: None (the logits' own, at least float32) or the dtype to compute the loss in."""
    return PRECISIONS[name]

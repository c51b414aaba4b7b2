"""Training losses, one registry: a loss of a model's outputs against integer labels, and which tasks take it.

    loss = LOSSES["stablemax"]; loss(logits, y, dtype=torch.float64)
    classification_loss(logits, y, kind="stablemax", dtype=torch.float64)

A task with a ``loss`` option lists the losses it accepts (its module's ``LOSSES``); a loss may name more tasks
that accept it (``Loss.tasks``), so a plugin loss joins a built-in task without editing it (grokrun.plugins).

StableMax (Prieto et al. 2025, "Grokking at the edge of numerical stability") replaces exp in the softmax by
s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0 (continuous, with a continuous first derivative, at 0), and
normalizes: p_i = s(x_i) / sum_j s(x_j). It grows linearly rather than exponentially, so the probability of
the right class does not round to exactly 1 (a zero loss, "softmax collapse") as soon in float32. ``dtype``
computes the loss in that precision (their float64 softmax), whatever the model's. Importing this module does
not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grokrun.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

KINDS = ("softmax", "stablemax")


def stablemax_s(x: Tensor) -> Tensor:
    """s(x): x + 1 for x >= 0, 1 / (1 - x) below. Each branch is fed only its own half of x (clamped), so the
    branch not taken contributes no inf or NaN to the gradient."""
    import torch

    return torch.where(x >= 0, x.clamp(min=0) + 1, 1 / (1 - x.clamp(max=0)))


def log_stablemax(x: Tensor, dim: int = -1) -> Tensor:
    import torch

    s = stablemax_s(x)
    return torch.log(s) - torch.log(s.sum(dim, keepdim=True))


def classification_loss(logits: Tensor, y: Tensor, kind: str = "softmax", dtype: torch.dtype | None = None,
                        reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits`` (N, C) against the labels ``y`` over softmax or StableMax, computed in ``dtype``
    (None: the logits' own, at least float32)."""
    import torch
    import torch.nn.functional as F

    logits = logits.to(dtype or torch.promote_types(logits.dtype, torch.float32))
    if kind == "softmax":
        return F.cross_entropy(logits, y, reduction=reduction)
    return F.nll_loss(log_stablemax(logits), y, reduction=reduction)


def collapsed(logits: Tensor, y: Tensor, kind: str = "softmax") -> Tensor:
    """How many examples have a float32 loss (softmax or StableMax cross-entropy) of exactly 0, the right class's
    probability rounded to 1: Prieto et al.'s measure of softmax collapse, such examples giving no gradient."""
    import torch

    return (classification_loss(logits.float(), y, kind, torch.float32, reduction="none") == 0).sum()


def precision(name: str) -> torch.dtype | None:
    """--softmax-dtype: None (the logits' own, at least float32) or the dtype to compute the loss in."""
    import torch

    return {"auto": None, "float32": torch.float32, "float64": torch.float64}[name]


class Loss:
    """A loss of outputs (N, C) against labels (N,): ``loss(outputs, y, dtype=None, reduction="mean")``.

    ``collapsed(outputs, y)`` counts the examples whose float32 loss is exactly 0 (softmax collapse; a zero where
    the loss has no softmax, ``counts_collapse`` off). ``per_output``: the mean runs over every output too (MSE on
    one-hot targets, as torch's MSELoss), so a task reports its evaluation loss on the same scale.
    """

    name = ""
    tasks: tuple[str, ...] = ()
    """Tasks that accept this loss besides those that list it in their LOSSES."""
    per_output = False
    counts_collapse = False

    def __call__(self, outputs: Tensor, y: Tensor, dtype: torch.dtype | None = None,
                 reduction: str = "mean") -> Tensor:
        raise NotImplementedError

    def collapsed(self, outputs: Tensor, y: Tensor) -> Tensor:
        import torch

        return torch.zeros((), dtype=torch.long, device=y.device)


class CrossEntropy(Loss):
    """Softmax cross-entropy."""

    name, kind, counts_collapse = "ce", "softmax", True

    def __call__(self, outputs, y, dtype=None, reduction="mean"):
        return classification_loss(outputs, y, self.kind, dtype, reduction)

    def collapsed(self, outputs, y):
        return collapsed(outputs, y, self.kind)


class StableMaxCrossEntropy(CrossEntropy):
    """Cross-entropy over StableMax."""

    name, kind = "stablemax", "stablemax"


class OneHotMSE(Loss):
    """Mean squared error against one-hot targets (Omnigrok's MNIST loss), in the outputs' precision."""

    name, per_output = "mse", True

    def __call__(self, outputs, y, dtype=None, reduction="mean"):
        import torch.nn.functional as F

        return F.mse_loss(outputs, F.one_hot(y, outputs.shape[-1]).to(outputs.dtype), reduction=reduction)


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (CrossEntropy(), StableMaxCrossEntropy(), OneHotMSE())}


def accepted(task_name: str, module) -> tuple[str, ...]:
    """The losses a task takes: those its module lists, then those that name it."""
    own = tuple(getattr(module, "LOSSES", ()))
    return own + tuple(n for n, loss in LOSSES.items() if task_name in loss.tasks and n not in own)


def check(task_name: str, module, name) -> None:
    """UserError unless the task accepts the loss ``name``, listing the ones it does."""
    choices = accepted(task_name, module)
    if not isinstance(name, str) or name not in choices:
        raise UserError(f"unknown loss {name!r} for task {task_name}; choose one of: {', '.join(choices)}")

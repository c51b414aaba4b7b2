"""Optimizers by name, and the published learning-rate warmup.

    optimizer = make_optimizer(cfg.optim, params)     # cfg.optim.name in OPTIMIZERS

A new optimizer is one function here and one entry in ``OPTIMIZERS``: its name then appears in --help
and in the "unknown optimizer" error. torch is imported when an optimizer is built, not before, so the
registry costs nothing to read.
"""

from __future__ import annotations

from typing import Callable

from grokrun.errors import UserError


def adam(o, params):
    """Adam with weight decay coupled into the gradient (L2), as the Grokfast modular script."""
    import torch

    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)


def adamw(o, params):
    """AdamW: decoupled weight decay."""
    import torch

    return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)


def sgd(o, params):
    """SGD with momentum beta1 and coupled weight decay."""
    import torch

    return torch.optim.SGD(params, lr=o.lr, momentum=o.beta1, weight_decay=o.weight_decay)


OPTIMIZERS: dict[str, Callable] = {"adam": adam, "adamw": adamw, "sgd": sgd}


def make_optimizer(o, params: list):
    """The optimizer an OptimConfig names, over ``params``."""
    if o.name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {o.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[o.name](o, params)


def warmup_factor(warmup_steps: int):
    """Learning-rate factor for LambdaLR, whose counter is 0 at step 1: step s uses min((s - 1) / warmup, 1).

    This is the published schedule (``update / 10`` over the first 10 updates): step 1 runs at rate 0,
    moving no weight while Adam's moments and the gradient filter still take in its gradient, and step
    warmup + 1 is the first at the full rate. Kept exactly, so a seed follows the published trajectory.
    """
    return lambda i: min(i / warmup_steps, 1.0) if warmup_steps else 1.0

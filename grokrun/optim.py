"""Optimizers by name, and the published learning-rate warmup.

    optimizer = make_optimizer(cfg.optim, params)     # cfg.optim.name in OPTIMIZERS

A new optimizer is one function here and one entry in ``OPTIMIZERS`` (or, in a user's plugin file, one
function marked ``@optimizer("name")``: grokrun.plugins): its name then appears in --help and in the "unknown
optimizer" error. torch is imported when an optimizer is built, not before, so the
registry costs nothing to read.

The adam, adamw and sgd entries build torch's optimizers with ``foreach=True``: the multi-tensor step, which
torch takes by default on CUDA only, on the CPU too. There it is the same per-tensor arithmetic in a C++ loop
instead of a Python one: bitwise the same weights (tests/unit/test_optim.py), about a tenth less time per step
for the small models of the tests and sweeps in four benchmark runs of five, within noise at the published size,
where the matrix products dominate (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

from grokrun.errors import UserError
from grokrun.muon import muon


def adam(o, params):
    """Adam with weight decay coupled into the gradient (L2), as the Grokfast modular script."""
    import torch

    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
                            foreach=True)


adam.decay = "coupled"  # how each optimizer decays: added to the gradient, or taken off the weights (--decay-to)
adam.stacks = True  # elementwise: seeds stacked on a leading axis step exactly as alone (grokrun.stacking)


def adamw(o, params):
    """AdamW: decoupled weight decay."""
    import torch

    return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
                             foreach=True)


adamw.decay = "decoupled"
adamw.stacks = True


def sgd(o, params):
    """SGD with momentum beta1 and coupled weight decay."""
    import torch

    return torch.optim.SGD(params, lr=o.lr, momentum=o.beta1, weight_decay=o.weight_decay, foreach=True)


sgd.decay = "coupled"
sgd.stacks = True

OPTIMIZERS: dict[str, Callable] = {"adam": adam, "adamw": adamw, "sgd": sgd, "muon": muon}


def optimizer(name: str):
    """Mark a function ``build(optim_settings, params) -> torch optimizer`` as the optimizer ``name`` of a plugin
    file (grokrun.plugins registers it; ``build.decay = "coupled" | "decoupled"`` lets --decay-to init use it)."""
    def mark(build):
        build.optimizer_name = name
        return build
    return mark


def stacks(name: str) -> bool:
    """Whether seeds stacked on a leading axis step with this optimizer exactly as alone: it says so
    (``build.stacks = True``, the elementwise ones); any other trains its seeds one after another."""
    return bool(getattr(OPTIMIZERS.get(name), "stacks", False))


def make_optimizer(o, params: list, names: list[str] | None = None, model=None):
    """The optimizer an OptimConfig names, over ``params``; with ``decay_to == "init"``, its weight decay pulls
    toward the initial weights (DecayToInit) instead of zero. A builder that sets ``needs_model`` gets the
    (name, parameter) pairs and the module (one run's) instead of the parameters alone."""
    import dataclasses

    from grokrun import optimizer_library

    build = OPTIMIZERS.get(o.name)
    if build is None:  # (its build checks the name and the arguments: UserError naming grokrun's own too)
        build = functools.partial(optimizer_library.build, built_in=tuple(OPTIMIZERS))  # (decays: its own way)
    form = getattr(build, "decay", None)
    if getattr(build, "needs_model", False):
        if model is None:
            raise UserError(f"the {o.name} optimizer steps one run's model, not seeds stacked together")
        inner = build
        build = lambda o, params: inner(o, list(zip(names, params)), model)  # noqa: E731
    if getattr(o, "decay_to", "zero") == "zero" or not o.weight_decay:
        return build(o, params)
    if form is None:
        raise UserError(f"--decay-to init: the optimizer {o.name!r} does not say how it decays (coupled or "
                        "decoupled); use --decay-to zero")
    optimizer = build(dataclasses.replace(o, weight_decay=0.0), params)
    DecayToInit(optimizer, o.weight_decay, form)
    return optimizer


class StepHook:
    """Work done before every ``optimizer.step()``, whose state rides in ``optimizer.state_dict()`` under ``KEY``
    (and comes back with ``load_state_dict``), so any checkpoint that saves the optimizer carries it. Subclasses
    define ``before_step``, ``state`` and ``load``; ``detach()`` takes the hook off again."""

    KEY = "step_hook"

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self._handles = [
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_step()),
            optimizer.register_state_dict_post_hook(self._save),
            optimizer.register_load_state_dict_pre_hook(self._load),
        ]

    def params(self) -> list:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def before_step(self) -> None:
        raise NotImplementedError

    def state(self):
        raise NotImplementedError

    def load(self, saved) -> None:
        raise NotImplementedError

    def _save(self, optimizer, state: dict) -> dict:
        state[self.KEY] = self.state()
        return state

    def _load(self, optimizer, state: dict) -> dict:
        state = dict(state)
        saved = state.pop(self.KEY, None)
        if saved is not None:
            self.load(saved)
        return state

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class DecayToInit(StepHook):
    """Weight decay toward the initial weights w0, in the optimizer's own form, as a step pre-hook (its own
    decay is off): coupled (Adam, SGD) adds wd * (w - w0) to the gradient; decoupled (AdamW) takes
    lr * wd * (w - w0) off the weights before the update, as AdamW's w * (1 - lr * wd). A weight with a zero
    gradient stays where it started. w0 goes into the optimizer's state_dict ("decay_init", one tensor per
    parameter in order), so a checkpoint carries it."""

    KEY = "decay_init"

    def __init__(self, optimizer, weight_decay: float, form: str):
        super().__init__(optimizer)
        self.weight_decay, self.form = weight_decay, form
        self.initial = [p.detach().clone() for p in self.params()]

    def before_step(self) -> None:
        import torch

        with torch.no_grad():
            i = 0
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    w0 = self.initial[i]
                    i += 1
                    if p.grad is None:
                        continue
                    if self.form == "coupled":
                        p.grad.add_(p - w0, alpha=self.weight_decay)
                    else:
                        p.sub_(p - w0, alpha=group["lr"] * self.weight_decay)

    def state(self) -> list:
        return list(self.initial)

    def load(self, saved: list) -> None:
        self.initial = [s.to(p.device, p.dtype) for s, p in zip(saved, self.params())]


def lr_factor(warmup_steps: int, normalized: float = 1.0, start: int = 0, anneal_steps: int = 0):
    """LambdaLR's factor for update i + 1: the warmup's; with ``anneal_steps``, after the warmup a cosine from 1
    to 0.1 over that many updates, then 0.1 (openai/grok's anneal_lr, min_lr = max_lr / 10); times
    ``normalized`` (1 / (1 + lamb) with --normalize-lr) from the first update the filter amplifies on."""
    warmup = warmup_factor(warmup_steps)

    def factor(i: int) -> float:
        f = warmup(i)
        if anneal_steps and i > warmup_steps:
            t = min((i - warmup_steps) / anneal_steps, 1.0)
            f = 0.1 + 0.9 * (1 + math.cos(math.pi * t)) / 2
        return f * (normalized if i >= start else 1.0)

    return warmup if normalized == 1.0 and not anneal_steps else factor


def warmup_factor(warmup_steps: int):
    """Learning-rate factor for LambdaLR, whose counter is 0 at step 1: step s uses min((s - 1) / warmup, 1).

    This is the published schedule (``update / 10`` over the first 10 updates): step 1 runs at rate 0,
    moving no weight while Adam's moments and the gradient filter still take in its gradient, and step
    warmup + 1 is the first at the full rate. Kept exactly, so a seed follows the published trajectory.
    """
    return lambda i: min(i / warmup_steps, 1.0) if warmup_steps else 1.0

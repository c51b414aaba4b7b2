"""Penalties on the model's input-output map added to the training loss: --reg NAME --reg-weight λ.

    grokrun train --task mnist --reg grokalign --reg-weight 0.001

``grokalign`` (Walker et al. 2025, "GrokAlign"): λ (E‖J_x‖_F + E‖b_x‖²) over the batch, where J_x is the
Jacobian of the model's outputs with respect to its input at x and b_x = f(x) − J_x x the offset of the local
affine map (zero for a ReLU network without biases). ‖J_x‖_F is Hutchinson's estimate with one random output
direction per example, as their code (JacobianRegulariser in their utils.py) draws it: v ~ N(0, I) scaled to
unit length, ‖J_x‖_F ≈ sqrt(C ‖vᵀJ_x‖²) for C outputs (exact in expectation under the square root: E[C ‖vᵀJ‖²]
= ‖J‖_F²), floored at sqrt(1e-8) as theirs. The offset is exact (one forward-mode product J_x x). ``jacobian``
is the first term alone: their utils.py's JacobianRegulariser, the form their public scripts train with.

A task gives the penalty its model as a function of a vector (``Task.vector_input``): MNIST's pixels, parity's
bits, XOR's features, the pair MLP's two one-hot vectors; the decoder looks tokens up, so it has none and the
run is refused in one line. The random directions are drawn from the global generator, which nothing else
draws from while training (each seed's batch order has its own), so a run is seeded and resumes exactly; its
seeds train one after another. Each evaluation writes the penalty, computed exactly (full Jacobians, no
draws), over the training set as the ``penalty`` column of metrics.csv (unweighted).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

from grokrun.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

CHOICES = ("none", "grokalign", "jacobian")
EXACT_CHUNK = 256  # examples whose full Jacobians are held at once in an evaluation


class Regularizer:
    """A penalty on f around the inputs x (rows of a batch): ``__call__`` its estimate for training (mean over
    the batch, differentiable in the weights), ``exact`` its value without draws (summed over the rows)."""

    name = ""
    offset = True

    def __call__(self, f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        import torch

        x = x.detach().requires_grad_(True)
        if self.offset:  # one forward gives f(x) and J_x x
            with warnings.catch_warnings():  # (torch's first forward-mode call scripts its decompositions, and warns)
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
                out, jx = torch.func.jvp(f, (x,), (x,))
        else:
            out, jx = f(x), None
        v = torch.randn_like(out)
        v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-8)
        (vj,) = torch.autograd.grad(out, x, v, create_graph=True)  # vᵀJ_x per row (rows are independent)
        jac = torch.sqrt((out.shape[1] * vj.flatten(1).pow(2).sum(1)).clamp(min=1e-8))
        penalty = jac.mean()
        if jx is not None:
            penalty = penalty + (out - jx).flatten(1).pow(2).sum(1).mean()
        return penalty

    def exact(self, f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """The penalty's exact value summed over the rows of x: ‖J_x‖_F from the full Jacobian (torch.func.jacrev),
        plus ‖f(x) − J_x x‖² with the offset."""
        import torch
        from torch.func import jacrev, vmap

        def one(xi):
            return f(xi.unsqueeze(0)).squeeze(0)

        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for i in range(0, len(x), EXACT_CHUNK):
            xs = x[i:i + EXACT_CHUNK].detach()
            jac = vmap(jacrev(one))(xs).detach().flatten(2)  # (rows, outputs, inputs)
            value = jac.pow(2).sum((1, 2)).clamp(min=1e-8).sqrt()
            if self.offset:
                with torch.no_grad():
                    out = f(xs).flatten(1)
                value = value + (out - (jac @ xs.flatten(1).unsqueeze(2)).squeeze(2)).pow(2).sum(1)
            total = total + value.double().sum()
        return total


class GrokAlign(Regularizer):
    name = "grokalign"


class JacobianNorm(Regularizer):
    name, offset = "jacobian", False


REGULARIZERS: dict[str, Regularizer] = {r.name: r for r in (GrokAlign(), JacobianNorm())}


def make(name: str) -> Regularizer | None:
    return None if name == "none" else REGULARIZERS[name]


def check(cfg) -> None:
    """UserError unless the run can take its --reg: a weight with it (and none without), a task whose model
    reads a vector."""
    from grokrun.tasks import task

    reg, weight = cfg.train.reg, cfg.train.reg_weight
    if reg == "none":
        if weight:
            raise UserError("--reg-weight weighs a regularizer; give one with --reg grokalign (or drop --reg-weight)")
        return
    if not weight:
        raise UserError(f"--reg {reg} needs its weight: add --reg-weight λ "
                        "(0.001 in GrokAlign's delayed-robustness run)")
    module = task(cfg.task)
    if not hasattr(module, "no_vector_input"):
        why = f"the {cfg.task} task's model reads none (it looks up tokens or gathers graphs)"
    else:
        why = module.no_vector_input(getattr(cfg, cfg.task))
    if why:
        raise UserError(f"--reg {reg} differentiates the model with respect to its input vector; {why}")

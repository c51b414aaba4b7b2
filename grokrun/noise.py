"""Power et al.'s two noise interventions, as openai/grok defines them; both on at training only.

--weight-noise σ (their ``weight_noise``): every forward pass of a training step sees each weight and bias
plus fresh N(0, σ²) noise (their Linear, LayerNorm and Embedding layers add it in ``forward`` when training);
the gradient is taken at the noisy weights and applied to the weights themselves; evaluation sees the weights
as they are. Here every trainable parameter of the model gets it (the decoder's are all in such layers).

--grad-noise σ (their optimizer's ``noise_factor``): N(0, σ²) noise added to Adam's normalized update m̂ / (√v̂
+ ε) before it is scaled by the step size, so the weights move by an extra −lr_t σ ξ / (1 − β1^t). Adding it
after the optimizer's own step is the same sum (their weight decay does not see the noise either); for SGD the
update is the (momentum) gradient, and the noise is −lr_t σ ξ. Other optimizers have no such update to add it
to and are refused in one line.

Both draw from the global generator, which nothing else draws from while training (each seed's batch order has
its own), so a run is seeded and resumes exactly (checkpoints keep the generator's state); their seeds train
one after another, as the draws of a stack would not be those of seeds alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grokrun.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

GRAD_NOISE_OPTIMIZERS = ("adam", "adamw", "sgd")


def check(cfg) -> None:
    if cfg.optim.grad_noise and cfg.optim.name not in GRAD_NOISE_OPTIMIZERS:
        raise UserError(f"--grad-noise adds noise to Adam's (or SGD's) update, as openai/grok does; the "
                        f"{cfg.optim.name} optimizer has no such update: use --optimizer adamw, adam or sgd")
    drawn = draws(cfg)
    if drawn and cfg.cuda_graph == "on":  # (stacked seeds are refused where a stack is formed: engine/run.py)
        raise UserError(f"{drawn} draws its random numbers eagerly: not replayed from CUDA graphs (--cuda-graph off)")


def noisy(params: dict[str, Tensor], sigma: float) -> dict[str, Tensor]:
    """Each trainable parameter plus N(0, sigma²) noise (differentiable in the parameter); the others as they are."""
    import torch

    return {n: p + sigma * torch.randn_like(p) if p.requires_grad else p for n, p in params.items()}


def add_update_noise(optimizer: torch.optim.Optimizer, sigma: float) -> None:
    """After ``optimizer.step()``: move each parameter by −step_size σ ξ, ξ ~ N(0, I), step_size the one the step
    just used (Adam's lr / (1 − β1^t); SGD's lr)."""
    import torch

    with torch.no_grad():
        for group in optimizer.param_groups:
            betas = group.get("betas")
            for p in group["params"]:
                if p.grad is None:
                    continue  # (no gradient reached it: the optimizer did not step it)
                scale = group["lr"]
                if betas is not None:
                    scale = scale / (1 - betas[0] ** float(optimizer.state[p]["step"]))
                p.add_(torch.randn_like(p), alpha=-scale * sigma)


def draws(cfg) -> str | None:
    """The setting that draws from the global generator while training, named for a message, or None: such a run
    trains its seeds one after another (a stack's draws would not be those of seeds alone), eagerly."""
    for flag, value in (("--dropout", cfg.model.dropout), ("--weight-noise", cfg.model.weight_noise),
                        ("--grad-noise", cfg.optim.grad_noise), (f"--reg {cfg.train.reg}", cfg.train.reg != "none")):
        if value:
            return flag
    return None

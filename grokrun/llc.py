"""The local learning coefficient (LLC) of a trained model, estimated with devinterp's SGLD sampler: how
many effective parameters the loss around the weights has (d/2 for a regular minimum with d of them; less
where the minimum is degenerate), the progress measure of the developmental-interpretability papers.

    settings = LLCSettings()                                       # devinterp's grokking example's defaults
    est = estimate(model, x, y, loss, settings)                    # est.mean, est.std, est.per_chain, est.trace
    est.warning                                                    # None, or why the estimate is unreliable

λ̂ = nβ (E_w[L_n(w)] − L_n(w*)), w drawn by SGLD from exp(−nβ L_n(w) − γ/2 ‖w − w*‖²) around the
weights w*: each step w ← w − ε/2 (nβ ∇L_batch(w) + γ (w − w*)) + √ε N(0, I). L_n(w*) is the training set's
loss at w*
(devinterp's default estimates it from a few batches). Needs ``pip install 'grokrun[interp]'`` (devinterp 1.x,
whose sampler takes any model and data loader).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from grokrun.errors import UserError

if TYPE_CHECKING:  # (torch is imported where a chain is sampled: the CLI imports this module for its defaults)
    from torch import Tensor, nn


@dataclass(frozen=True)
class LLCSettings:
    """SGLD's settings; the defaults are those devinterp's grokking example settles on for modular addition
    (ε 3e-3, nβ 2, γ 5, 500 draws, its training batch of 128), with 2 chains to see their spread."""
    lr: float = 3e-3  # ε, the step size
    nbeta: float = 2.0  # nβ, the inverse temperature times the number of samples
    localization: float = 5.0  # γ, the pull toward the weights being measured
    chains: int = 2
    draws: int = 500
    batch_size: int = 128
    burnin: int = 0  # steps discarded at the start of each chain
    seed: int = 0

    def check(self) -> None:
        for name, ok, what in (("lr", self.lr > 0, "> 0"), ("nbeta", self.nbeta > 0, "> 0"),
                               ("localization", self.localization >= 0, ">= 0"),
                               ("chains", 1 <= self.chains <= 64, "in [1, 64]"),
                               ("draws", 4 <= self.draws <= 10**6, "in [4, 1,000,000]"),
                               ("batch-size", self.batch_size >= 1, ">= 1"),
                               ("burnin", 0 <= self.burnin <= 10**6, "in [0, 1,000,000]"),
                               ("seed", 0 <= self.seed < 2**32, "in [0, 2**32)")):
            if not ok:
                raise UserError(f"--llc-{name} must be {what}, got {getattr(self, name.replace('-', '_'))}")


@dataclass
class Estimate:
    mean: float
    std: float  # over the chains
    per_chain: list[float]
    init_loss: float
    trace: list[list[float]] = field(default_factory=list)  # (chain, draw) sampled losses
    warning: str | None = None


def needs_devinterp():
    try:
        from devinterp.optim.sgld import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    except ImportError:
        raise UserError("--llc needs devinterp 1.x: pip install 'grokrun[interp]'") from None
    return SGLD, estimate_learning_coeff_with_summary


def estimate(model: nn.Module, x: Tensor, y: Tensor, loss: Callable[[nn.Module, Tensor, Tensor], Tensor],
             settings: LLCSettings) -> Estimate:
    """The LLC of ``model`` at its weights for the training set (x, y) and ``loss(model, x, y)`` (a mean),
    reproducible for ``settings.seed``. The model is not changed (devinterp samples a copy)."""
    import warnings

    import torch

    sgld, sample = needs_devinterp()
    with torch.no_grad():
        init = float(loss(model, x, y))
    # The batches of one shuffled pass over the training set, gathered once (devinterp cycles through its
    # loader's first pass anyway); a loader of whole batches, so no step collates examples one by one.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(settings.seed))
    batches = [(x[i], y[i]) for i in order.split(min(settings.batch_size, len(x)))]
    loader = torch.utils.data.DataLoader(batches, batch_size=1, collate_fn=lambda items: items[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ("Using passed in nbeta": it is meant)
        try:
            out = sample(model, loader, evaluate=lambda m, batch: loss(m, *batch), sampling_method=sgld,
                         optimizer_kwargs={"lr": settings.lr, "nbeta": settings.nbeta,
                                           "localization": settings.localization},
                         num_chains=settings.chains, num_draws=settings.draws, num_burnin_steps=settings.burnin,
                         init_loss=init if init != 0 else 1e-300,  # (devinterp takes 0 for "not given")
                         seed=settings.seed, device="cpu", verbose=False)
        except RuntimeError as e:
            if "NaN" not in str(e):
                raise
            nan = float("nan")
            return Estimate(nan, nan, [nan] * settings.chains, init, warning="diverged: a chain's loss became NaN "
                            "(a smaller --llc-lr, or more --llc-localization)")
    chains = [float(out[f"llc-chain/{i}"]) for i in range(settings.chains)]
    trace = [[float(v) for v in row] for row in out["loss/trace"]]
    result = Estimate(float(out["llc/mean"]), float(out["llc/std"]) if settings.chains > 1 else 0.0, chains, init,
                      trace)
    result.warning = diagnose(result)
    return result


def diagnose(est: Estimate) -> str | None:
    """Why an estimate is not to be trusted, by the checks devinterp's documentation asks for: a chain that
    diverged, a negative LLC (the sampler found lower loss: the weights are not at a local minimum for it), a
    loss trace still moving in its last quarter, chains that disagree."""
    values = [v for row in est.trace for v in row]
    if not all(math.isfinite(v) for v in [*values, est.mean]):
        return "diverged: a chain's loss is not finite (a smaller --llc-lr, or more --llc-localization)"
    if est.mean < 0:
        return (f"negative ({est.mean:.3g}): the chains found lower loss than the weights' own, which are not a "
                "local minimum for the sampler (a smaller --llc-lr, or more --llc-localization)")
    draws = len(est.trace[0])
    quarter = max(1, draws // 4)
    last = sum(sum(row[-quarter:]) for row in est.trace) / (quarter * len(est.trace))
    before = sum(sum(row[-2 * quarter:-quarter]) for row in est.trace) / (quarter * len(est.trace))
    rise = last - est.init_loss
    if rise > 0 and abs(last - before) > 0.1 * rise:
        return (f"not settled: the sampled loss still moves by {abs(last - before) / rise:.0%} of its rise in the "
                "last quarter of the draws (more --llc-draws, or a larger --llc-lr)")
    if len(est.per_chain) > 1 and est.std > 0.5 * abs(est.mean):
        return f"chains disagree: their LLCs spread by {est.std:.3g} around {est.mean:.3g} (more --llc-draws)"
    return None

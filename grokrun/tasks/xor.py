"""High-dimensional XOR (GrokAlign's xor_grokking.py): two ±1 signal features among many ±ε noise features.

    grokrun train --task xor --features 40000 --samples 400

Each example is two signal features drawn from {−1, +1} followed by ``features − 2`` noise features drawn from
{−ε, +ε}; its label is the product of the two signals (their XOR, as ±1). A two-layer ReLU network without
biases (features → width → 1) regresses the label with squared error, full-batch SGD and weight decay, in
float64, as their script; an example is right when the sign of the output is its label. At their size they
see it memorize first and generalize later (not run here: ~2 s a step on two CPU cores; a small one, as the
tests', generalizes at once). The seed draws the weights, then the training set, then a test set
of the same size, then one Gaussian direction for the noise features of the test set, which the
``val_acc_perturbed`` column adds, scaled by ``--perturb`` (their robustness measure at amplitude 0.2; they
draw the direction anew at each evaluation, here it is drawn once so the column is a function of the weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from grokrun.errors import UserError
from grokrun.tasks.base import EpochBatches, Task, check_at_most, fork_global_generator, reads_vectors

if TYPE_CHECKING:
    import torch
    from torch import Tensor

NAME = "xor"


@dataclass
class Options:
    features: int = 40_000
    """Features per example: 2 signal features (±1), the rest noise (±epsilon)."""
    samples: int = 400
    """Training examples (the test set is as large)."""
    epsilon: float = 0.05
    """Size of the noise features."""
    width: int = 2048
    """Hidden width of the two-layer ReLU network (no biases)."""
    perturb: float = 0.2
    """Standard deviation of the Gaussian noise on the test set's noise features for the val_acc_perturbed column."""


# Their script: SGD at 0.1 with weight decay 0.1, the whole training set each step, float64, 1,000 steps.
DEFAULTS = {"optim.name": "sgd", "optim.lr": 0.1, "optim.beta1": 0.0, "optim.weight_decay": 0.1,
            "optim.warmup_steps": 0, "train.batch_size": 400, "train.max_steps": 1000, "train.eval_every": 10,
            "train.train_eval_every": 1, "dtype": "float64"}
PRESETS = {"none": {}}


def validate(cfg: Options) -> None:
    for flag, value in (("samples", cfg.samples), ("width", cfg.width)):
        if value < 1:
            raise UserError(f"--{flag} must be >= 1, got {value}")
    if cfg.features < 2:
        raise UserError(f"--features must be >= 2 (the two signal features), got {cfg.features}")
    check_at_most({"features": (cfg.features, 1_000_000), "samples": (cfg.samples, 1_000_000),
                   "width": (cfg.width, 65_536)})
    if cfg.features * cfg.samples > 10**9:
        raise UserError(f"--features × --samples must be <= 1e9 (each set is held whole), got "
                        f"{cfg.features * cfg.samples:,}")
    if not 0.0 <= cfg.epsilon <= 1.0:
        raise UserError(f"--epsilon must be in [0, 1], got {cfg.epsilon}")
    if not 0.0 <= cfg.perturb <= 100.0:
        raise UserError(f"--perturb must be in [0, 100], got {cfg.perturb}")


def describe(cfg: Options) -> str:
    """"xor: 2 of 40,000 features (ε=0.05), 400 samples, MLP 2048"."""
    return f"xor: 2 of {cfg.features:,} features (ε={cfg.epsilon:g}), {cfg.samples:,} samples, MLP {cfg.width}"


def build_model(cfg: Options):
    from torch import nn

    return nn.Sequential(nn.Linear(cfg.features, cfg.width, bias=False), nn.ReLU(),
                         nn.Linear(cfg.width, 1, bias=False))


def examples(cfg: Options) -> tuple[Tensor, Tensor]:
    """``samples`` examples from the global generator: features (N, features) and labels, the signals' product."""
    import torch

    signal = torch.randint(0, 2, (cfg.samples, 2)) * 2 - 1
    noise = (torch.randint(0, 2, (cfg.samples, cfg.features - 2)) * 2 - 1).double() * cfg.epsilon  # (ε in float64)
    return torch.cat([signal.double(), noise], 1), (signal[:, 0] * signal[:, 1]).double()


no_vector_input = reads_vectors  # the network reads the features


class XorTask(Task):
    batchable = True
    extra_splits = {"val_acc_perturbed": "perturbed"}

    def __init__(self, cfg: Options, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype):
        import torch

        torch.manual_seed(seed)  # one stream, in order: the weights, the training set, the test set, the direction
        self.model = build_model(cfg).to(device=device, dtype=dtype)
        train, test = examples(cfg), examples(cfg)
        direction = torch.randn(cfg.samples, cfg.features - 2, dtype=torch.float64)
        perturbed = test[0].clone()
        perturbed[:, 2:] += cfg.perturb * direction
        self.data = {name: (x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype))
                     for name, (x, y) in (("train", train), ("val", test), ("perturbed", (perturbed, test[1])))}
        self.batches = EpochBatches(cfg.samples, batch_size, device, fork_global_generator())

    def objective(self, model, data: tuple[Tensor, Tensor], idx: Tensor) -> Tensor:
        x, y = data
        return (model(x[idx]).squeeze(1) - y[idx]).pow(2).mean()

    def score(self, model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        import torch

        out = model(x).squeeze(1)
        return ((out - y).pow(2).sum(), (torch.sign(out) == y).sum(), torch.zeros((), dtype=torch.long,
                                                                                  device=y.device))


def build(cfg, device: torch.device, dtype: torch.dtype) -> XorTask:
    """The task for a resolved run config."""
    return XorTask(cfg.xor, cfg.seed, cfg.train.batch_size, device, dtype)

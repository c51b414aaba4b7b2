"""Sparse parity (Barak et al. 2022): n random bits, the label is the parity of k of them; an MLP learns it.

    grokrun train --task parity --n-bits 40 --k 3

Each example is n bits drawn uniformly (as 0/1 inputs); its label is the sum of the first k bits mod 2 (an MLP
treats its inputs alike, so which k is immaterial). The seed draws the examples, a fixed number of them, split
into training and validation, and the initial weights. Learning it takes n^O(k) work and, with few samples, it
groks: training accuracy first, validation much later. Prieto et al. (2025) show StableMax and ⊥Grad on it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from grokrun.errors import UserError
from grokrun.tasks.base import (ClassificationTask, EpochBatches, check_at_most, fork_global_generator,
                                reads_vectors, train_count)

if TYPE_CHECKING:
    import torch
    from torch import Tensor

NAME = "parity"


@dataclass
class Options:
    n_bits: int = 40
    """Bits per example."""
    k: int = 3
    """Bits whose parity is the label (the first k), 1 <= k <= n."""
    samples: int = 2000
    """Examples drawn in all (training and validation)."""
    train_frac: float = 0.5
    """Fraction of the examples used for training, in (0, 1)."""
    depth: int = 2
    """MLP layers (linear maps), >= 1."""
    width: int = 256
    """MLP hidden width."""
    loss: str = "ce"
    """ce (softmax cross-entropy) | stablemax (cross-entropy over StableMax)."""


# An MLP on few samples, trained with AdamW and no warmup, evaluated once per epoch.
LOSSES = ("ce", "stablemax")  # (grokrun.losses)
DEFAULTS = {"optim.name": "adamw", "optim.weight_decay": 0.01, "optim.warmup_steps": 0, "train.batch_size": 64,
            "train.max_steps": 20_000}
PRESETS = {"none": {}}


def validate(cfg: Options) -> None:
    for flag, value in (("n-bits", cfg.n_bits), ("k", cfg.k), ("samples", cfg.samples), ("depth", cfg.depth),
                        ("width", cfg.width)):
        if value < 1:
            raise UserError(f"--{flag} must be >= 1, got {value}")
    if cfg.k > cfg.n_bits:
        raise UserError(f"--k must be <= --n-bits ({cfg.n_bits}), got {cfg.k}")
    if cfg.samples < 2:
        raise UserError(f"--samples must be >= 2 (one to train on, one to validate), got {cfg.samples}")
    check_at_most({"n-bits": (cfg.n_bits, 10_000), "samples": (cfg.samples, 10_000_000), "depth": (cfg.depth, 64),
                   "width": (cfg.width, 16_384)})
    if not 0.0 < cfg.train_frac < 1.0:
        raise UserError(f"--train-frac must be in (0, 1), got {cfg.train_frac}")


def describe(cfg: Options) -> str:
    """"parity: 3 of 40 bits, 2,000 samples, 50% train, MLP 2×256"."""
    return (f"parity: {cfg.k} of {cfg.n_bits} bits, {cfg.samples:,} samples, {cfg.train_frac:.0%} train, "
            f"MLP {cfg.depth}×{cfg.width}" + (", StableMax" if cfg.loss == "stablemax" else ""))


def build_model(cfg: Options):
    from grokrun.models import mlp

    return mlp(cfg.depth, cfg.width, "ReLU", inputs=cfg.n_bits, outputs=2)


def examples(cfg: Options) -> tuple[Tensor, Tensor]:
    """``samples`` examples, drawn from the global generator: bits (N, n) as 0/1 and labels, the parity of the
    first k bits."""
    import torch

    bits = torch.randint(0, 2, (cfg.samples, cfg.n_bits))
    return bits, bits[:, :cfg.k].sum(1) % 2


no_vector_input = reads_vectors  # the MLP reads the bits


class ParityTask(ClassificationTask):
    batchable = True

    def __init__(self, cfg: Options, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype,
                 loss_dtype: torch.dtype | None = None):
        import torch

        torch.manual_seed(seed)  # one stream, in order: the initial weights, the examples, each epoch's batch order
        self.model = build_model(cfg).to(device=device, dtype=dtype)
        bits, labels = examples(cfg)
        n_train = train_count(cfg.train_frac, cfg.samples)
        x = bits.to(device=device, dtype=dtype)
        self.data = {"train": (x[:n_train], labels[:n_train].to(device)), "val": (x[n_train:], labels[n_train:].to(device))}
        self.batches = EpochBatches(n_train, batch_size, device, fork_global_generator())
        self.use_loss(cfg.loss, loss_dtype)


def build(cfg, device: torch.device, dtype: torch.dtype) -> ParityTask:
    """The task for a resolved run config."""
    from grokrun.losses import precision

    return ParityTask(cfg.parity, cfg.seed, cfg.train.batch_size, device, dtype, precision(cfg.train.softmax_dtype))

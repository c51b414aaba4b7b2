"""MNIST with 1,000 training images and a large initialization: the Omnigrok / Grokfast MLP setup.

    grokrun train --task mnist --filter ema

An MLP whose initial weights are all multiplied by 8 memorizes its 1,000 images first and
generalizes much later (Liu et al. 2023, "Omnigrok"). The images come from torchvision's MNIST files;
all of them are kept on the device as one tensor per split, so a step is two indexing ops and the MLP.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

from grokrun.errors import UserError
from grokrun.tasks.base import EpochBatches, Task, at_least_float32, check_at_most, fork_global_generator

if TYPE_CHECKING:
    import torch
    from torch import Tensor

NAME = "mnist"


@dataclass
class Options:
    data_dir: str = "data"
    """Dataset folder (MNIST goes in <data-dir>/MNIST/raw)."""
    download: bool = True
    """Download the dataset when it is missing."""
    train_points: int = 1000
    """Training images: the first N of the 60,000."""
    depth: int = 3
    """MLP layers (linear maps), >= 1."""
    width: int = 200
    """MLP hidden width."""
    activation: str = "relu"
    """relu | tanh | gelu | sigmoid."""
    init_scale: float = 8.0
    """Every initial parameter is multiplied by this (Omnigrok's large initialization)."""
    loss: str = "mse"
    """mse (on one-hot targets, as published) | ce (cross-entropy)."""


# Omnigrok's MNIST script: AdamW with torch's default betas, no warmup; evaluations dense early (log
# schedule), so few that the training set is scored at each.
DEFAULTS = {"optim.name": "adamw", "optim.beta2": 0.999, "optim.weight_decay": 0.01, "optim.warmup_steps": 0,
            "train.batch_size": 200, "train.max_steps": 100_000, "train.eval_schedule": "log",
            "train.train_eval_every": 1}
PRESETS = {
    "none": {},  # the baseline groks at ~44k steps
    "ema": {"filter.alpha": 0.8, "filter.lamb": 0.1, "optim.weight_decay": 2.0},
}

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "gelu": "GELU", "sigmoid": "Sigmoid"}  # torch.nn class names
LOSSES = ("mse", "ce")


def validate(cfg: Options) -> None:
    if cfg.activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {cfg.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
    if cfg.loss not in LOSSES:
        raise UserError(f"unknown loss {cfg.loss!r}; choose one of: {', '.join(LOSSES)}")
    for flag, value in (("train-points", cfg.train_points), ("depth", cfg.depth), ("width", cfg.width)):
        if value < 1:
            raise UserError(f"--{flag} must be >= 1, got {value}")
    if cfg.train_points > 60_000:
        raise UserError(f"--train-points must be <= 60000 (the MNIST training set), got {cfg.train_points}")
    check_at_most({"depth": (cfg.depth, 64), "width": (cfg.width, 16_384)})
    if not cfg.init_scale > 0:
        raise UserError(f"--init-scale must be > 0, got {cfg.init_scale}")


def describe(cfg: Options) -> str:
    """"mnist: 1,000 train images, MLP 3×200 relu, init ×8, mse"."""
    return (f"mnist: {cfg.train_points:,} train images, MLP {cfg.depth}×{cfg.width} {cfg.activation}, "
            f"init ×{cfg.init_scale:g}, {cfg.loss}")


def load(data_dir: str, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training and test images (uint8, N x 28 x 28) and labels, through torchvision's MNIST reader."""
    from torchvision.datasets import MNIST

    raw = Path(data_dir) / "MNIST" / "raw"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision narrates each mirror it tries
            train = MNIST(data_dir, train=True, download=download)
            test = MNIST(data_dir, train=False, download=download)
    except (RuntimeError, URLError, OSError) as e:
        why = "and could not be downloaded" if download else "(--no-download)"
        raise UserError(f"MNIST is not in {raw} {why}: place {', '.join(FILES)} there "
                        f"(gunzipped, from {MNIST.mirrors[0]})") from e
    except (ValueError, AssertionError, IndexError) as e:  # a file that is there but is not IDX
        raise UserError(f"cannot read the MNIST files in {raw} ({e or type(e).__name__}); "
                        "delete them to download them again") from e
    return train.data, train.targets, test.data, test.targets


def build_model(cfg: Options):
    """The MLP with Omnigrok's large initialization: every initial parameter, biases included, times init_scale."""
    from grokrun.models import mlp, scale_init

    return scale_init(mlp(cfg.depth, cfg.width, ACTIVATIONS[cfg.activation]), cfg.init_scale)


class MnistTask(Task):
    batchable = True
    eval_chunk = 10_000

    def __init__(self, cfg: Options, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype):
        import torch

        train_x, train_y, test_x, test_y = load(cfg.data_dir, cfg.download)
        torch.manual_seed(seed)
        self.model = build_model(cfg).to(device=device, dtype=dtype)
        n = min(cfg.train_points, len(train_x))

        def prepare(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            return x.reshape(len(x), -1).to(device=device, dtype=dtype) / 255, y.to(device)

        self.data = {"train": prepare(train_x[:n], train_y[:n]), "val": prepare(test_x, test_y)}
        self.mse = cfg.loss == "mse"
        self.loss_units = 10 if self.mse else 1  # the MSE averages over the 10 outputs too, as torch's MSELoss
        self.batches = EpochBatches(n, batch_size, device, fork_global_generator())

    def _loss(self, logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        import torch.nn.functional as F

        if self.mse:  # on one-hot targets
            return F.mse_loss(logits, F.one_hot(y, 10).to(logits.dtype), reduction=reduction)
        return F.cross_entropy(logits, y, reduction=reduction)

    def objective(self, model, data: tuple[Tensor, Tensor], idx: Tensor) -> Tensor:
        x, y = data
        return self._loss(model(x[idx]), y[idx])

    def score(self, model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = at_least_float32(model(x))
        return self._loss(logits, y, reduction="sum"), (logits.argmax(-1) == y).sum()


def build(cfg, device: torch.device, dtype: torch.dtype) -> MnistTask:
    """The task for a resolved run config."""
    return MnistTask(cfg.mnist, cfg.seed, cfg.train.batch_size, device, dtype)

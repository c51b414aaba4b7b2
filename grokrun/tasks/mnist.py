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
from grokrun.tasks.base import (ClassificationTask, EpochBatches, at_least_float32, check_at_most,
                                fork_global_generator, reads_vectors)

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
    """mse (on one-hot targets, as published) | ce (cross-entropy) | stablemax (cross-entropy over StableMax)."""


# Omnigrok's MNIST script: AdamW with torch's default betas, no warmup; evaluations dense early (log
# schedule), so few that the training set is scored at each.
DEFAULTS = {"optim.name": "adamw", "optim.beta2": 0.999, "optim.weight_decay": 0.01, "optim.warmup_steps": 0,
            "train.batch_size": 200, "train.max_steps": 100_000, "train.eval_schedule": "log",
            "train.train_eval_every": 1}
PRESETS = {
    "none": {},  # the baseline groks at ~44k steps
    "ema": {"filter.alpha": 0.8, "filter.lamb": 0.1, "optim.weight_decay": 2.0},
}

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's first
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "gelu": "GELU", "sigmoid": "Sigmoid"}  # torch.nn class names
LOSSES = ("mse", "ce", "stablemax")  # (grokrun.losses)


def validate(cfg: Options) -> None:
    if cfg.activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {cfg.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
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


def read_idx(path: Path) -> Tensor:
    """An IDX file of unsigned bytes (MNIST's format), plain or gzipped: magic 0 0 0x08 ndim, then ndim
    big-endian sizes, then the data."""
    import gzip
    import struct

    import torch

    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path.name} is not an IDX file of bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != (size := int(torch.tensor(shape).prod().item()) if ndim else 1):
        raise ValueError(f"{path.name} holds {len(body):,} bytes where its header says {size:,}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _found(raw: Path) -> list[Path] | None:
    """Each of MNIST's four files in ``raw``, plain or gzipped (as distributed); None if one is missing."""
    found = []
    for name in FILES:
        path = next((p for p in (raw / name, raw / f"{name}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


def load(data_dir: str, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training and test images (uint8, N x 28 x 28) and labels from <data_dir>/MNIST/raw, the four IDX files
    plain or gzipped; where they are missing, torchvision downloads them there."""
    raw = Path(data_dir) / "MNIST" / "raw"
    if _found(raw) is None and download:
        from torchvision.datasets import MNIST

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torchvision narrates each mirror it tries
                MNIST(data_dir, train=True, download=True)
        except (RuntimeError, URLError, OSError) as e:
            raise UserError(f"MNIST is not in {raw} and could not be downloaded: place {', '.join(FILES)} there "
                            f"(gzipped or not, from {MIRROR})") from e
    paths = _found(raw)
    if paths is None:
        raise UserError(f"MNIST is not in {raw} (--no-download): place {', '.join(FILES)} there "
                        f"(gzipped or not, from {MIRROR})")
    try:
        train_x, train_y, test_x, test_y = (read_idx(p) for p in paths)
    except (ValueError, OSError, EOFError) as e:  # there, but not IDX (or a truncated gzip)
        raise UserError(f"cannot read the MNIST files in {raw} ({e or type(e).__name__}); "
                        "delete them to download them again") from e
    return train_x, train_y.long(), test_x, test_y.long()


def build_model(cfg: Options):
    """The MLP with Omnigrok's large initialization: every initial parameter, biases included, times init_scale."""
    from grokrun.models import mlp, scale_init

    return scale_init(mlp(cfg.depth, cfg.width, ACTIVATIONS[cfg.activation]), cfg.init_scale)


no_vector_input = reads_vectors  # the MLP reads the pixels


class MnistTask(ClassificationTask):
    batchable = True
    eval_chunk = 10_000

    def __init__(self, cfg: Options, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype,
                 loss_dtype: torch.dtype | None = None):
        import torch

        train_x, train_y, test_x, test_y = load(cfg.data_dir, cfg.download)
        torch.manual_seed(seed)
        self.model = build_model(cfg).to(device=device, dtype=dtype)
        if cfg.train_points > len(train_x):
            raise UserError(f"--train-points {cfg.train_points:,}: the training images in {cfg.data_dir} are "
                            f"{len(train_x):,}; ask for at most that many")
        n = cfg.train_points

        def prepare(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            return x.reshape(len(x), -1).to(device=device, dtype=dtype) / 255, y.to(device)

        self.data = {"train": prepare(train_x[:n], train_y[:n]), "val": prepare(test_x, test_y)}
        self.use_loss(cfg.loss, loss_dtype, outputs=10)  # (the MSE averages over the 10 outputs too)
        self.batches = EpochBatches(n, batch_size, device, fork_global_generator())

    def logits(self, model, x: Tensor) -> Tensor:
        return at_least_float32(model(x))


def build(cfg, device: torch.device, dtype: torch.dtype) -> MnistTask:
    """The task for a resolved run config."""
    from grokrun.losses import precision

    return MnistTask(cfg.mnist, cfg.seed, cfg.train.batch_size, device, dtype, precision(cfg.train.softmax_dtype))

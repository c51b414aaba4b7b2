"""QM9 with 100 molecules and a large initialization: the Grokfast graph-network regression.

    grokrun train --task qm9 --filter ema

Two NNConv layers, an add-pool and a small MLP fit one of QM9's targets (isotropic polarizability by
default). The task has no accuracy: its headline is the minimum validation loss. All molecules live on
the device as one concatenated graph; a batch is assembled by gathering the chosen molecules' nodes
and edges with index lists built on the host from per-molecule sizes, so no DataLoader runs per step
and the device is never waited on.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

from grokrun.errors import UserError
from grokrun.tasks.base import EpochBatches, Task, check_at_most, fork_global_generator, train_count

if TYPE_CHECKING:
    import torch
    from torch import Tensor

NAME = "qm9"


@dataclass
class Options:
    data_dir: str = "data"
    """Dataset folder (QM9 goes in <data-dir>/QM9)."""
    download: bool = True
    """Download the dataset when it is missing."""
    size: int = 100
    """Molecules: the first N of QM9."""
    train_frac: float = 0.5
    """Fraction used for training, in (0, 1); the split is seeded."""
    target: int = 1
    """Regression target, a column of QM9's y (0-18; 1 = isotropic polarizability alpha)."""
    init_scale: float = 3.0
    """Every initial parameter is multiplied by this."""


# Grokfast's QM9 script: AdamW with torch's default betas, no weight decay; a regression (no accuracy).
# Log-spaced evaluations, so few that the training set is scored at each.
DEFAULTS = {"optim.name": "adamw", "optim.beta2": 0.999, "optim.weight_decay": 0.0, "optim.warmup_steps": 0,
            "train.batch_size": 32, "train.max_steps": 100_000, "train.eval_schedule": "log",
            "train.train_eval_every": 1}
PRESETS = {
    "none": {},
    "ema": {"filter.alpha": 0.9, "filter.lamb": 1.0, "optim.weight_decay": 0.01},
}

PROCESSED_URL = "https://data.pyg.org/datasets/qm9_v3.zip"
TARGETS = 19
TARGET_NAMES = {0: "dipole moment", 1: "polarizability α", 2: "HOMO", 3: "LUMO", 4: "gap"}


def validate(cfg: Options) -> None:
    if cfg.size < 2:
        raise UserError(f"--size must be >= 2, got {cfg.size}")
    check_at_most({"size": (cfg.size, 130_831)}, " (the molecules of QM9)")
    if not 0.0 < cfg.train_frac < 1.0:
        raise UserError(f"--train-frac must be in (0, 1), got {cfg.train_frac}")
    if not 0 <= cfg.target < TARGETS:
        raise UserError(f"--target must be in 0..{TARGETS - 1}, got {cfg.target}")
    if not cfg.init_scale > 0:
        raise UserError(f"--init-scale must be > 0, got {cfg.init_scale}")


def describe(cfg: Options) -> str:
    """"qm9: 100 molecules, polarizability α, init ×3"."""
    target = TARGET_NAMES.get(cfg.target, f"target {cfg.target}")
    return f"qm9: {cfg.size:,} molecules, {target}, init ×{cfg.init_scale:g}"


def load(cfg: Options) -> list:
    """The first ``size`` molecules (torch_geometric Data), downloading and processing QM9 if allowed."""
    from grokrun.models import pyg
    root = Path(cfg.data_dir) / "QM9"
    have = (root / "processed" / "data_v3.pt").is_file() or (root / "raw" / "qm9_v3.pt").is_file()
    where = (f"QM9 is not in {root}", f"place qm9_v3.pt (from {PROCESSED_URL}, unzipped) in {root / 'raw'}")
    if not have and not cfg.download:
        raise UserError(f"{where[0]} (--no-download): {where[1]}")
    try:
        # torch_geometric reports its download and processing on stdout and stderr: one line of ours instead
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            dataset = pyg().datasets.QM9(str(root))
    except (URLError, OSError, RuntimeError) as e:
        raise UserError(f"{where[0]} and could not be downloaded ({type(e).__name__}): {where[1]}") from e
    if len(dataset) < cfg.size:
        raise UserError(f"--size {cfg.size}: {root} holds only {len(dataset)} molecules")
    return [dataset[i] for i in range(cfg.size)]


class GraphStore:
    """Molecules concatenated into one graph on the device, and batches gathered from it.

    Node and edge ranges of each molecule are kept on the host; a batch's gather indices come from them
    by a few small CPU ops and go to the device without waiting (pinned, non-blocking on CUDA).
    """

    def __init__(self, graphs: list, target: int, device: torch.device, dtype: torch.dtype):
        import torch

        self.device = device
        self.nodes = torch.tensor([g.num_nodes for g in graphs])
        self.edges = torch.tensor([g.edge_index.shape[1] for g in graphs])
        self.node_start = torch.cumsum(self.nodes, 0) - self.nodes
        self.edge_start = torch.cumsum(self.edges, 0) - self.edges
        self.x = torch.cat([g.x for g in graphs]).to(device=device, dtype=dtype)
        # edge ends as node numbers within their own molecule: shifted per batch on the host
        self.edge_index = torch.cat([g.edge_index for g in graphs], 1).to(device)
        self.edge_attr = torch.cat([g.edge_attr for g in graphs]).to(device=device, dtype=dtype)
        self.y = torch.cat([g.y[:, target] for g in graphs]).to(device=device, dtype=dtype)

    def _to_device(self, t: Tensor) -> Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
        """(x, edge_index, edge_attr, batch vector, targets, number of molecules) for molecules ``idx``."""
        import torch

        idx = idx.cpu()
        nodes, edges = self.nodes[idx], self.edges[idx]
        node_ids = _ranges(self.node_start[idx], nodes)
        edge_ids = _ranges(self.edge_start[idx], edges)
        new_start = torch.cumsum(nodes, 0) - nodes  # where each molecule's nodes begin in the batch
        shift = torch.repeat_interleave(new_start, edges)  # per edge: its molecule's offset in the batch
        owner = torch.repeat_interleave(torch.arange(len(idx)), nodes)
        node_ids, edge_ids, shift, owner, idx = (self._to_device(t) for t in (node_ids, edge_ids, shift, owner, idx))
        edge_index = self.edge_index[:, edge_ids] + shift
        return self.x[node_ids], edge_index, self.edge_attr[edge_ids], owner, self.y[idx], len(nodes)


def _ranges(starts: Tensor, lengths: Tensor) -> Tensor:
    """concat(arange(s, s + n) for s, n in zip(starts, lengths)), without a Python loop."""
    import torch

    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    return torch.repeat_interleave(starts - offsets, lengths) + torch.arange(total)


def build_model(cfg: Options):
    """The published graph network, every initial parameter times init_scale."""
    from grokrun.models import GraphNet, scale_init

    return scale_init(GraphNet(), cfg.init_scale)


class Qm9Task(Task):
    has_accuracy = False
    capturable = False  # each batch is gathered on the host, its size varying with the molecules

    def __init__(self, cfg: Options, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype):
        import torch

        graphs = load(cfg)
        # As the Grokfast script: the seed draws the split first, then the initial weights.
        torch.manual_seed(seed)
        order = torch.randperm(cfg.size)
        n_train = train_count(cfg.train_frac, cfg.size)
        self.store = GraphStore(graphs, cfg.target, device, dtype)
        self.split = {"train": order[:n_train], "val": order[n_train:]}
        self.model = build_model(cfg).to(device=device, dtype=dtype)
        self.full = {split: self.store.batch(idx) for split, idx in self.split.items()}  # for evaluation
        self.batches = EpochBatches(n_train, batch_size, torch.device("cpu"), fork_global_generator())

    def data_tensors(self) -> list[Tensor]:
        s = self.store
        return [s.x, s.edge_index, s.edge_attr, s.y, s.nodes, s.edges, self.split["train"], self.split["val"]]

    def loss(self, idx: Tensor) -> Tensor:
        import torch.nn.functional as F

        x, edge_index, edge_attr, batch, y, n = self.store.batch(self.split["train"][idx])
        return F.mse_loss(self.model(x, edge_index, edge_attr, batch, n), y)

    def evaluate(self, split: str) -> tuple[Tensor, None, None]:
        import torch.nn.functional as F

        x, edge_index, edge_attr, batch, y, n = self.full[split]
        pred = self.model(x, edge_index, edge_attr, batch, n).double()
        return F.mse_loss(pred, y.double()), None, None


def build(cfg, device: torch.device, dtype: torch.dtype) -> Qm9Task:
    """The task for a resolved run config."""
    return Qm9Task(cfg.qm9, cfg.seed, cfg.train.batch_size, device, dtype)

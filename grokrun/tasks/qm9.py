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
import warnings
from pathlib import Path
from urllib.error import URLError

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokrun.config import ConfigError, Qm9Config
from grokrun.tasks.base import EpochBatches, Task, fork_global_generator

PROCESSED_URL = "https://data.pyg.org/datasets/qm9_v3.zip"
NODE_FEATURES, EDGE_FEATURES, TARGETS = 11, 4, 19


def validate(cfg: Qm9Config) -> None:
    if cfg.size < 2:
        raise ConfigError(f"--size must be >= 2, got {cfg.size}")
    if not 0.0 < cfg.train_frac < 1.0:
        raise ConfigError(f"--train-frac must be in (0, 1), got {cfg.train_frac}")
    if not 0 <= cfg.target < TARGETS:
        raise ConfigError(f"--target must be in 0..{TARGETS - 1}, got {cfg.target}")
    if not cfg.init_scale > 0:
        raise ConfigError(f"--init-scale must be > 0, got {cfg.init_scale}")


def _pyg():
    with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit; not the user's concern
        warnings.simplefilter("ignore")
        import torch_geometric.datasets
        import torch_geometric.nn
    return torch_geometric


def load(cfg: Qm9Config) -> list:
    """The first ``size`` molecules (torch_geometric Data), downloading and processing QM9 if allowed."""
    pyg = _pyg()
    root = Path(cfg.data_dir) / "QM9"
    have = (root / "processed" / "data_v3.pt").is_file() or (root / "raw" / "qm9_v3.pt").is_file()
    where = (f"QM9 is not in {root}", f"place qm9_v3.pt (from {PROCESSED_URL}, unzipped) in {root / 'raw'}")
    if not have and not cfg.download:
        raise ConfigError(f"{where[0]} (--no-download): {where[1]}")
    try:
        # torch_geometric reports its download and processing on stdout and stderr: one line of ours instead
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            dataset = pyg.datasets.QM9(str(root))
    except (URLError, OSError, RuntimeError) as e:
        raise ConfigError(f"{where[0]} and could not be downloaded ({type(e).__name__}): {where[1]}") from e
    if len(dataset) < cfg.size:
        raise ConfigError(f"--size {cfg.size}: {root} holds only {len(dataset)} molecules")
    return [dataset[i] for i in range(cfg.size)]


class GraphStore:
    """Molecules concatenated into one graph on the device, and batches gathered from it.

    Node and edge ranges of each molecule are kept on the host; a batch's gather indices come from them
    by a few small CPU ops and go to the device without waiting (pinned, non-blocking on CUDA).
    """

    def __init__(self, graphs: list, target: int, device: torch.device, dtype: torch.dtype):
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
    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    return torch.repeat_interleave(starts - offsets, lengths) + torch.arange(total)


class GraphNet(nn.Module):
    """NNConv(11 -> 32) and NNConv(32 -> 16), each with an edge network 4 -> 32 -> in*out and a ReLU;
    add-pool over each molecule; Linear 16 -> 32, ReLU, Linear 32 -> 1."""

    def __init__(self):
        super().__init__()
        NNConv = _pyg().nn.NNConv
        self.conv1 = NNConv(NODE_FEATURES, 32, nn.Sequential(nn.Linear(EDGE_FEATURES, 32), nn.ReLU(),
                                                             nn.Linear(32, NODE_FEATURES * 32)))
        self.conv2 = NNConv(32, 16, nn.Sequential(nn.Linear(EDGE_FEATURES, 32), nn.ReLU(), nn.Linear(32, 32 * 16)))
        self.fc = nn.Linear(16, 32)
        self.out = nn.Linear(32, 1)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, n: int) -> Tensor:
        """One prediction per molecule: (n,)."""
        x = F.relu(self.conv1(x, edge_index, edge_attr))
        x = F.relu(self.conv2(x, edge_index, edge_attr))
        pooled = torch.zeros(n, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, batch, x)  # add-pool
        return self.out(F.relu(self.fc(pooled))).squeeze(-1)


class Qm9Task(Task):
    has_accuracy = False

    def __init__(self, cfg: Qm9Config, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype):
        graphs = load(cfg)
        # As the Grokfast script: the seed draws the split first, then the initial weights.
        torch.manual_seed(seed)
        order = torch.randperm(cfg.size)
        n_train = max(1, min(cfg.size - 1, int(round(cfg.train_frac * cfg.size, 6))))
        self.store = GraphStore(graphs, cfg.target, device, dtype)
        self.split = {"train": order[:n_train], "val": order[n_train:]}
        self.model = GraphNet()
        with torch.no_grad():  # the large initialization: every parameter
            for p in self.model.parameters():
                p.mul_(cfg.init_scale)
        self.model.to(device=device, dtype=dtype)
        self.full = {split: self.store.batch(idx) for split, idx in self.split.items()}  # for evaluation
        self.batches = EpochBatches(n_train, batch_size, torch.device("cpu"), fork_global_generator())
        self.title = f"qm9, {cfg.size} molecules, target {cfg.target}"

    def data_tensors(self) -> list[Tensor]:
        s = self.store
        return [s.x, s.edge_index, s.edge_attr, s.y, s.nodes, s.edges, self.split["train"], self.split["val"]]

    def loss(self, idx: Tensor) -> Tensor:
        x, edge_index, edge_attr, batch, y, n = self.store.batch(self.split["train"][idx])
        return F.mse_loss(self.model(x, edge_index, edge_attr, batch, n), y)

    @torch.no_grad()
    def evaluate(self, split: str) -> tuple[Tensor, None]:
        x, edge_index, edge_attr, batch, y, n = self.full[split]
        pred = self.model(x, edge_index, edge_attr, batch, n).double()
        return F.mse_loss(pred, y.double()), None


def build(cfg, device: torch.device, dtype: torch.dtype) -> Qm9Task:
    """The task for a resolved RunConfig."""
    return Qm9Task(cfg.qm9, cfg.seed, cfg.train.batch_size, device, dtype)

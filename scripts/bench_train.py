"""Milliseconds per training step of grokrun's tasks, against a straightforward implementation of the
same model and loop, side by side in one process (interleaved blocks of steps).

modular: the straightforward version is what one writes first: nn.MultiheadAttention over every
position of every layer (logits for all positions, the last one kept), a per-parameter Python EMA loop,
and an `.item()` per batch for logging. grokrun computes only what the loss needs (the last layer's
queries, attention output and MLP at the answer position only), filters with multi-tensor ops, and
never syncs between evaluations.

mnist: the published setup (MLP 784-200-200-10, batch 200, MSE, EMA). Straightforward is the Omnigrok
script's loop: a torch DataLoader over torchvision's MNIST with ToTensor (a PIL image per example per
step), the same per-parameter EMA loop and `.item()`. grokrun keeps the 1,000 images on the device as one
tensor and indexes batches. The data need not be real MNIST for timing: without --data-dir, IDX files of
MNIST's sizes filled with random pixels are written to a temporary folder.

imdb: the published setup (2-layer LSTM 256, 500 tokens, batch 50, EMA, clipping at 5) on 1,000 reviews of
random words. Straightforward is the Grokfast script's step: a DataLoader over a TensorDataset, the linear
unit applied at every position, `.item()`; grokrun indexes batches on the device and reads the last position.

qm9: the published setup (two NNConv layers, batch 32, EMA) on 100 random molecules of QM9's first sizes.
Straightforward is the Grokfast script's step: torch_geometric's DataLoader collating Data objects each
step, and `.item()`; grokrun gathers the batch from one graph kept on the device.

    python scripts/bench_train.py [--task modular|mnist|imdb|qm9] [--device cpu] [--steps 30] [--rounds 5] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from grokrun.config import resolve
from grokrun.measure import pick_device
from grokrun.optim import make_optimizer
from grokrun.filters import EMAFilter
from grokrun.measure import synchronize
from grokrun.tasks import task as task_module
from grokrun.models import GraphNet, mlp
from grokrun.tasks.mnist import ACTIVATIONS

from bench_filters import PlainEMA


class PlainBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, mask):
        h = self.ln1(x)  # the published block: the stream itself is normalized
        x = h + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class PlainDecoder(nn.Module):
    def __init__(self, vocab: int, width: int = 128, layers: int = 2, heads: int = 4, seq_len: int = 5):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(PlainBlock(width, heads) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device), diagonal=1)
        h = self.tok(x) + self.pos.weight[:t]
        for block in self.blocks:
            h = block(h, mask)
        return self.head(self.ln_f(h))[:, -1]  # every position computed, the last one used


def grokrun_step(task, cfg, autocast, grad_filter, opt=None):
    """grokrun's step: the task's loss on a batch indexed on the device, fused filter, nothing read back (with
    ``opt``, that optimizer over the model's parameters; by default, the config's)."""
    params = list(task.model.parameters())
    opt = opt if opt is not None else make_optimizer(cfg.optim, params)

    def step():
        idx = task.batches.next()
        with autocast:
            loss = task.loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
        grad_filter.apply(params)
        opt.step()

    return step


def plain_step(model, cfg, grad_filter, batch_loss):
    """The straightforward step around ``batch_loss()`` (which draws its own batch): a per-parameter
    filter loop and an `.item()` per batch for logging, the host sync of a typical loop."""
    params = list(model.parameters())
    opt = make_optimizer(cfg.optim, params)
    logged = []

    def step():
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        if cfg.optim.clip_grad:
            nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
        grad_filter.apply(params)
        opt.step()
        logged.append(loss.item())

    return step


def forever(loader):
    """A DataLoader's batches, epoch after epoch (each epoch reshuffled, as a training loop sees them)."""
    while True:
        yield from loader


def setup_modular(args, device, autocast):
    cfg = resolve(None, {"task": "modular", "filter.name": "ema", "device": args.device})
    torch.manual_seed(0)
    task = task_module("modular").build(cfg, device, torch.float32)
    x, y = task.data["train"]
    vocab = task.model.head.out_features
    plain = PlainDecoder(vocab).to(device)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in task.model.parameters())

    def batch_loss():
        idx = task.batches.next()
        with autocast:
            return F.cross_entropy(plain(x[idx]), y[idx])

    return cfg, grokrun_step(task, cfg, autocast, EMAFilter(0.98, 2.0)), plain_step(plain, cfg, PlainEMA(0.98, 2.0),
                                                                                     batch_loss)


def write_random_mnist(root: Path) -> None:
    """IDX files of MNIST's sizes (60,000 and 10,000 images), random pixels: enough to time a step."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        for kind, shape in (("images", (n, 28, 28)), ("labels", (n,))):
            data = torch.randint(0, 256 if kind == "images" else 10, shape, generator=g, dtype=torch.uint8)
            with open(raw / f"{prefix}-{kind}-idx{len(shape)}-ubyte", "wb") as f:
                f.write(struct.pack(">BBBB", 0, 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape))
                f.write(data.numpy().tobytes())


def setup_mnist(args, device, autocast):
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    data_dir = args.data_dir
    if data_dir is None:
        args.tmp = tempfile.TemporaryDirectory()  # removed when the script exits
        data_dir = args.tmp.name
        write_random_mnist(Path(data_dir))
    cfg = resolve(None, {"task": "mnist", "filter.name": "ema", "device": args.device, "*.data_dir": data_dir,
                         "*.download": False})
    torch.manual_seed(0)
    task = task_module("mnist").build(cfg, device, torch.float32)
    m = cfg.mnist
    plain = mlp(m.depth, m.width, ACTIVATIONS[m.activation])
    with torch.no_grad():
        for p in plain.parameters():
            p.mul_(m.init_scale)
    plain = nn.Sequential(nn.Flatten(), *plain).to(device)
    subset = Subset(MNIST(data_dir, train=True, transform=ToTensor()), range(m.train_points))
    loader = DataLoader(subset, batch_size=cfg.train.batch_size, shuffle=True)
    one_hots = torch.eye(10, device=device)
    batches = forever(loader)

    def batch_loss():
        x, labels = next(batches)
        with autocast:
            return F.mse_loss(plain(x.to(device)), one_hots[labels.to(device)])

    return cfg, grokrun_step(task, cfg, autocast, EMAFilter(0.8, 0.1)), plain_step(plain, cfg, PlainEMA(0.8, 0.1),
                                                                                   batch_loss)


def setup_imdb(args, device, autocast):
    import csv
    import random

    from torch.utils.data import DataLoader, TensorDataset

    args.tmp = tempfile.TemporaryDirectory()
    path = Path(args.tmp.name) / "reviews.csv"
    rng = random.Random(0)
    lexicon = [f"w{i}" for i in range(3000)]
    with open(path, "w", newline="") as f:  # 1,000 reviews of 300 random words: the step cost is the same
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(1000):
            w.writerow([" ".join(rng.choices(lexicon, k=300)), "positive" if i % 2 else "negative"])
    cfg = resolve(None, {"task": "imdb", "filter.name": "ema", "device": args.device, "*.data_file": str(path),
                         **({"imdb.seq_len": args.seq_len} if args.seq_len else {})})
    torch.manual_seed(0)
    task = task_module("imdb").build(cfg, device, torch.float32)
    i = cfg.imdb
    x, y = (t.cpu() for t in task.data["train"])

    class PublishedLSTM(nn.Module):  # the script's model: the linear unit on every position, the last kept
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(i.vocab_size + 1, i.embedding_dim)
            self.lstm = nn.LSTM(i.embedding_dim, i.width, num_layers=i.layers, batch_first=True)
            self.fc = nn.Linear(i.width, 1)

        def forward(self, x, hidden):
            out, hidden = self.lstm(self.embedding(x), hidden)
            p = torch.sigmoid(self.fc(out.contiguous().view(-1, i.width))).view(x.shape[0], -1)
            return p[:, -1], hidden

    plain = PublishedLSTM()
    with torch.no_grad():
        for p in plain.parameters():
            p.mul_(i.init_scale)
    plain.to(device)
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.train.batch_size, shuffle=True)
    batches = forever(loader)

    def batch_loss():
        xb, yb = next(batches)
        xb, yb = xb.to(device), yb.to(device)
        h = tuple(torch.zeros(i.layers, len(xb), i.width, device=device) for _ in range(2))
        with autocast:
            p, _ = plain(xb, h)
            return F.binary_cross_entropy(p.float(), yb)

    return cfg, grokrun_step(task, cfg, autocast, EMAFilter(0.98, 2.0)), plain_step(plain, cfg, PlainEMA(0.98, 2.0),
                                                                                     batch_loss)


def setup_qm9(args, device, autocast):
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import global_add_pool

    args.tmp = tempfile.TemporaryDirectory()
    raw = Path(args.tmp.name) / "QM9" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    molecules = []
    for i in range(100):  # the sizes of QM9's first molecules: 5 to 15 atoms, tree-like bonds
        n = int(torch.randint(5, 16, (1,), generator=g))
        parents = [int(torch.randint(0, r, (1,), generator=g)) for r in range(1, n)]
        children = list(range(1, n))
        molecules.append({"x": torch.rand(n, 11, generator=g), "y": torch.rand(1, 19, generator=g),
                          "edge_index": torch.tensor([children + parents, parents + children]),
                          "edge_attr": torch.eye(4)[torch.randint(0, 4, (n - 1,), generator=g).repeat(2)]})
    torch.save(molecules, raw / "qm9_v3.pt")
    cfg = resolve(None, {"task": "qm9", "filter.name": "ema", "device": args.device, "*.data_dir": args.tmp.name,
                         "*.download": False})
    torch.manual_seed(0)
    task = task_module("qm9").build(cfg, device, torch.float32)
    plain = GraphNet()
    with torch.no_grad():
        for p in plain.parameters():
            p.mul_(cfg.qm9.init_scale)
    plain.to(device)
    train_set = [Data(**molecules[i]) for i in task.split["train"].tolist()]
    loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True)
    batches = forever(loader)

    def batch_loss():  # the Grokfast script's: a DataLoader collating Data objects, pooling by batch vector
        batch = next(batches).to(device)
        with autocast:
            h = F.relu(plain.conv1(batch.x, batch.edge_index, batch.edge_attr))
            h = F.relu(plain.conv2(h, batch.edge_index, batch.edge_attr))
            out = plain.out(F.relu(plain.fc(global_add_pool(h, batch.batch))))
            return F.mse_loss(out, batch.y[:, 1].unsqueeze(1))

    return cfg, grokrun_step(task, cfg, autocast, EMAFilter(0.9, 1.0)), plain_step(plain, cfg, PlainEMA(0.9, 1.0),
                                                                                   batch_loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="modular", choices=["modular", "mnist", "imdb", "qm9"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--data-dir", default=None, help="mnist: a folder with MNIST/raw (default: random IDX files)")
    ap.add_argument("--steps", type=int, default=30, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved blocks per implementation")
    ap.add_argument("--seq-len", type=int, default=None,
                    help="imdb: tokens per review (default the published 500; gpu_check.sh's CPU form: 50)")
    args = ap.parse_args()
    device = pick_device(args.device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bfloat16"
                else torch.autocast(device.type, enabled=False))
    setup = {"modular": setup_modular, "mnist": setup_mnist, "imdb": setup_imdb, "qm9": setup_qm9}[args.task]
    cfg, step_ours, step_plain = setup(args, device, autocast)

    runs = {"grokrun": step_ours, "straightforward": step_plain}
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        for _ in range(min(5, args.steps)):
            fn()
    for _ in range(args.rounds):
        for name, fn in runs.items():
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            synchronize(device)
            ms[name].append((time.perf_counter() - t0) * 1e3 / args.steps)
    med = {name: statistics.median(v) for name, v in ms.items()}
    length = f", {cfg.imdb.seq_len} tokens" if args.task == "imdb" else ""
    print(f"{args.task} step, batch {cfg.train.batch_size}{length}, {args.dtype}, device {device}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} blocks of {args.steps} steps")
    for name, v in med.items():
        print(f"  {name:16}{v:8.2f} ms/step")
    print(f"  speedup: {med['straightforward'] / med['grokrun']:.2f}x")


if __name__ == "__main__":
    main()

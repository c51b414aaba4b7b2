"""Milliseconds per training step of grokrun's modular model, against a straightforward implementation
of the same model and loop, side by side in one process (interleaved blocks of steps).

The straightforward version is what one writes first: nn.MultiheadAttention over every position of
every layer (logits for all positions, the last one kept), a per-parameter Python EMA loop, and an
`.item()` per batch for logging. grokrun computes only what the loss needs (the last layer's queries,
attention output and MLP at the answer position only), filters with multi-tensor ops, and never syncs
between evaluations.

    python scripts/bench_train.py [--device cpu] [--steps 30] [--rounds 5] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from grokrun.config import resolve
from grokrun.engine import make_optimizer, pick_device
from grokrun.filters import EMAFilter
from grokrun.measure import synchronize
from grokrun.tasks import task_module

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--steps", type=int, default=30, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved blocks per implementation")
    args = ap.parse_args()
    device = pick_device(args.device)
    cfg = resolve(None, {"task": "modular", "filter.name": "ema", "device": args.device})
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bfloat16"
                else torch.autocast(device.type, enabled=False))
    torch.manual_seed(0)
    task = task_module("modular").build(cfg, device, torch.float32)
    x, y = task.data["train"]
    vocab = task.model.head.out_features
    plain = PlainDecoder(vocab).to(device)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in task.model.parameters())

    ours = dict(model=task.model, filter=EMAFilter(0.98, 2.0))
    ours["opt"] = make_optimizer(cfg.optim, list(task.model.parameters()))
    theirs = dict(model=plain, filter=PlainEMA(0.98, 2.0))
    theirs["opt"] = make_optimizer(cfg.optim, list(plain.parameters()))
    logged = []

    def step_ours():
        idx = task.batches.next()
        with autocast:
            loss = task.loss(idx)
        ours["opt"].zero_grad(set_to_none=True)
        loss.backward()
        ours["filter"].apply(task.model.parameters())
        ours["opt"].step()

    def step_plain():
        idx = task.batches.next()
        with autocast:
            loss = F.cross_entropy(plain(x[idx]), y[idx])
        theirs["opt"].zero_grad(set_to_none=True)
        loss.backward()
        theirs["filter"].apply(list(plain.parameters()))
        theirs["opt"].step()
        logged.append(loss.item())  # the per-batch host sync of a typical loop

    runs = {"grokrun": step_ours, "straightforward": step_plain}
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        for _ in range(5):
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
    print(f"modular step, batch {cfg.train.batch_size}, {args.dtype}, device {device}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} blocks of {args.steps} steps")
    for name, v in med.items():
        print(f"  {name:16}{v:8.2f} ms/step")
    print(f"  speedup: {med['straightforward'] / med['grokrun']:.2f}x")


if __name__ == "__main__":
    main()

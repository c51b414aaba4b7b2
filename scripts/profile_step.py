"""What one grokrun training step spends its time on: torch.profiler over a few steps of a task's published
setup (on random data of the published sizes), the top operators and kernels, and any warning a step raises.

    python scripts/profile_step.py --task imdb --device cuda [--steps 20] [--top 15]

For the LSTM this answers whether cuDNN's fused RNN kernel runs (its kernels appear by name) and whether
torch copies the weights each call (the "not part of single contiguous chunk of memory" warning, which this
script turns into a listed warning); for any task, how much of the step is host time and how many launches.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import setup_imdb, setup_mnist, setup_modular, setup_qm9  # noqa: E402  (the published setups)

SETUPS = {"modular": setup_modular, "mnist": setup_mnist, "imdb": setup_imdb, "qm9": setup_qm9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="imdb", choices=list(SETUPS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    args.dtype = "float32"
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, enabled=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg, ours, _ = SETUPS[args.task](args, device, autocast)
        for _ in range(5):  # warm-up: allocator, cuDNN heuristics
            ours()
        if device.type == "cuda":
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                ours()
            if device.type == "cuda":
                torch.cuda.synchronize()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{args.task} on {device}, {args.steps} steps, sorted by {sort}:")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top, max_name_column_width=60))
    names = [e.key for e in prof.key_averages()]
    rnn = [n for n in names if "rnn" in n.lower() or "lstm" in n.lower() or "cudnn" in n.lower()]
    print("RNN/cuDNN entries:", ", ".join(sorted(set(rnn))[:12]) or "none")
    print("warnings raised:", "; ".join(sorted({f"{w.category.__name__}: {w.message}" for w in caught})) or "none")


if __name__ == "__main__":
    main()

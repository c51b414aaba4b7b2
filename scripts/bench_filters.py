"""Cost of one gradient-filter application on the modular model, against a plain per-parameter loop
and against one whole training step, side by side in one process: interleaved (the state a filter meets
in training, caches used by everything else) and back to back (caches warm).

    python scripts/bench_filters.py [--device cpu] [--reps 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque

import torch

from grokrun.config import resolve
from grokrun.measure import pick_device
from grokrun.optim import make_optimizer
from grokrun.filters import EMAFilter, MAFilter
from grokrun.measure import synchronize
from grokrun.tasks import task as task_module


class PlainEMA:
    """The straightforward version: a Python loop over parameters, one small op at a time."""

    def __init__(self, alpha=0.98, lamb=2.0):
        self.alpha, self.lamb, self.mu = alpha, lamb, {}

    def apply(self, params):
        for i, p in enumerate(params):
            if p.grad is None:
                continue
            if i not in self.mu:
                self.mu[i] = p.grad.detach().clone()
            else:
                self.mu[i] = self.mu[i] * self.alpha + p.grad * (1 - self.alpha)
            p.grad = p.grad + self.mu[i] * self.lamb


class PlainMA:
    """The straightforward version: a deque per parameter, re-summed every step (O(window))."""

    def __init__(self, window=100, lamb=5.0):
        self.window, self.lamb, self.kept = window, lamb, {}

    def apply(self, params):
        for i, p in enumerate(params):
            kept = self.kept.setdefault(i, deque(maxlen=self.window))
            kept.append(p.grad.detach().clone())
            if len(kept) == self.window:
                p.grad = p.grad + sum(kept) / len(kept) * self.lamb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    device = pick_device(args.device)
    cfg = resolve(None, {"task": "modular", "device": args.device})
    torch.manual_seed(0)
    task = task_module("modular").build(cfg, device, torch.float32)
    params = list(task.model.parameters())
    optimizer = make_optimizer(cfg.optim, params)
    base = [torch.randn_like(p) for p in params]

    def reset():
        for p, g in zip(params, base):
            if p.grad is None:
                p.grad = g.clone()
        torch._foreach_copy_([p.grad for p in params], base)

    def train_step():
        loss = task.loss(task.batches.next())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    filters = {"ema": EMAFilter(0.98, 2.0), "ma (window 100)": MAFilter(100, 5.0),
               "plain ema": PlainEMA(0.98, 2.0), "plain ma (window 100)": PlainMA(100, 5.0)}
    # Fill the MA windows first, so every timed call amplifies (the steady state of a run).
    for f in filters.values():
        for _ in range(100):
            reset()
            f.apply(params)
    for _ in range(5):
        train_step()

    def time_apply(f) -> float:
        """Seconds for one application, on freshly reset gradients."""
        reset()
        synchronize(device)
        t0 = time.perf_counter()
        f.apply(params)
        synchronize(device)
        return time.perf_counter() - t0

    timings: dict[str, list[float]] = {name: [] for name in [*filters, "training step"]}
    for _ in range(args.reps):  # interleaved, so drift in machine speed hits every entry alike
        for name, f in filters.items():
            timings[name].append(time_apply(f))
        if len(timings["training step"]) < max(20, args.reps // 4):
            t0 = time.perf_counter()
            train_step()
            synchronize(device)
            timings["training step"].append(time.perf_counter() - t0)

    # Back to back as well: the filter's state stays in cache, the best case. The interleaved figure
    # above is the state a filter meets in training, after a backward pass has used the caches.
    warm = {name: [time_apply(f) for _ in range(args.reps)] for name, f in filters.items()}

    ms = {name: statistics.median(t) * 1e3 for name, t in timings.items()}
    ms_warm = {name: statistics.median(t) * 1e3 for name, t in warm.items()}
    n = sum(p.numel() for p in params)
    print(f"modular model: {len(params)} tensors, {n:,} parameters, device {device}, "
          f"{torch.get_num_threads()} threads; medians of {args.reps} reps")
    print(f"{'':24}{'interleaved ms':>15}{'% of step':>11}{'back-to-back ms':>17}")
    for name in [*filters, "training step"]:
        print(f"{name:24}{ms[name]:15.3f}{100 * ms[name] / ms['training step']:10.2f}%"
              + (f"{ms_warm[name]:17.3f}" if name in ms_warm else ""))
    for plain, ours in (("plain ema", "ema"), ("plain ma (window 100)", "ma (window 100)")):
        print(f"{plain} / {ours}: {ms[plain] / ms[ours]:.1f}x slower interleaved, "
              f"{ms_warm[plain] / ms_warm[ours]:.1f}x back to back")


if __name__ == "__main__":
    main()

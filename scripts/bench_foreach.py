"""Milliseconds per training step of the modular task with grokrun's Adam (foreach=True: torch's multi-tensor
step, a C++ loop over the tensors) against torch's default on the CPU (foreach=False: a Python loop), side by
side in one process (interleaved blocks of steps), at the tests' small size and at the published one. Both
copies start from the same weights and draw the same batches; the script checks they end bitwise equal.

    OMP_NUM_THREADS=1 python scripts/bench_foreach.py [--steps 30] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

from grokrun.config import resolve
from grokrun.filters.ema import EMAFilter
from grokrun.optim import make_optimizer
from grokrun.tasks import task as task_module

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import grokrun_step  # noqa: E402  (the step the other benchmarks time)

SIZES = {"small (the tests')": {"modular.p": 11, "modular.width": 16, "modular.layers": 1, "modular.heads": 2,
                                "train.batch_size": 32},
         "published": {}}


def stepper(settings: dict, foreach: bool):
    cfg = resolve(None, {"task": "modular", "filter.name": "ema", "device": "cpu", **settings})
    torch.manual_seed(0)
    task = task_module("modular").build(cfg, torch.device("cpu"), torch.float32)
    params = list(task.model.parameters())
    opt = make_optimizer(cfg.optim, params)
    for group in opt.param_groups:  # (read at each step; False: torch's per-tensor loop, its default on the CPU)
        group["foreach"] = foreach
    return grokrun_step(task, cfg, contextlib.nullcontext(), EMAFilter(0.98, 2.0), opt), params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved blocks per optimizer")
    args = ap.parse_args()
    print(f"modular step, EMA, Adam, cpu, {torch.get_num_threads()} threads; median of {args.rounds} blocks of "
          f"{args.steps} steps")
    for size, settings in SIZES.items():
        runs = {"foreach=True (grokrun)": stepper(settings, True), "foreach=False": stepper(settings, False)}
        ms: dict[str, list[float]] = {name: [] for name in runs}
        for step, _ in runs.values():  # warm-up (the first steps allocate the optimizer's and filter's state)
            for _ in range(5):
                step()
        for _ in range(args.rounds):
            for name, (step, _) in runs.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                ms[name].append((time.perf_counter() - t0) * 1e3 / args.steps)
        (_, pa), (_, pb) = runs.values()
        same = all(torch.equal(x, y) for x, y in zip(pa, pb))
        med = {name: statistics.median(v) for name, v in ms.items()}
        print(f"{size}: " + ", ".join(f"{name} {v:.2f} ms/step" for name, v in med.items())
              + f"; ratio {med['foreach=True (grokrun)'] / med['foreach=False']:.2f}; weights bitwise equal: {same}")


if __name__ == "__main__":
    main()

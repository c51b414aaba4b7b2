"""Cost per run-step of N seeds trained together as one stacked model, against N runs one after another,
side by side in one process: the engine's own step (Run.step), on the published settings of each task.

For each N in --seeds-list, one Run of N seeds (grokrun.stacking.Stacked) and one Run of a single seed
(the task's own module) are timed in interleaved blocks of steps; N runs one after another cost N times the
single run's step, so the speedup is N x single / stacked. Evaluation is not timed (it is batched the
same way). MNIST needs no real data: IDX files of MNIST's sizes with random pixels are written to a
temporary folder.

    python scripts/bench_batched.py [--task modular|mnist] [--device cpu|cuda] [--seeds-list 1,4,16,64]
                                    [--steps 10] [--rounds 3]

CUDA graphs (--cuda-graph) are not implemented yet, so on a GPU this measures the eager stacked step only.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from grokrun.config import resolve
from grokrun.engine import Run, pick_device
from grokrun.measure import synchronize

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import write_random_mnist  # noqa: E402


def make_run(cfg, seeds: list[int]) -> Run:
    return Run([dataclasses.replace(cfg, seed=s) for s in seeds])


def time_steps(run: Run, steps: int, device: torch.device, start: int) -> float:
    """Milliseconds per step over ``steps`` steps (the device waited for at the end)."""
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        run.step(start + i)
    synchronize(device)
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="modular", choices=("modular", "mnist"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds-list", default="1,4,16,64")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved blocks per variant; the median is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    overrides = {"task": args.task, "filter.name": "ema", "device": args.device}
    tmp = None
    if args.task == "mnist":
        tmp = tempfile.TemporaryDirectory()
        write_random_mnist(Path(tmp.name))
        overrides.update({"mnist.data_dir": tmp.name, "mnist.download": False})
    cfg = resolve(None, overrides)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.task}, EMA, published settings, {cfg.dtype}, torch {torch.__version__}, {name}")
    print(f"{'N':>4} {'single ms/step':>15} {'stacked ms/step':>16} {'per run-step':>13} {'speedup':>8}")
    for n in (int(x) for x in args.seeds_list.split(",")):
        single, stacked = make_run(cfg, [0]), make_run(cfg, list(range(n)))
        ms = {"single": [], "stacked": []}
        step = 1 + 20  # past the warmup of the learning rate and one step to warm up each
        for run in (single, stacked):
            time_steps(run, 2, device, 1)
        for r in range(args.rounds):
            for key, run in (("single", single), ("stacked", stacked)):
                ms[key].append(time_steps(run, args.steps, device, step))
            step += args.steps
        one, many = statistics.median(ms["single"]), statistics.median(ms["stacked"])
        print(f"{n:>4} {one:>15.2f} {many:>16.2f} {many / n:>13.2f} {n * one / many:>7.2f}x", flush=True)
        del single, stacked
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

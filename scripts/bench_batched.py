"""Cost per run-step of N seeds trained together as one stacked model, against N runs one after another,
side by side in one process: the engine's own step (Run.step), on the published settings of each task.

For each N in --seeds-list, one Run of N seeds (grokrun.stacking.Stacked) and one Run of a single seed
(the task's own module) are timed in interleaved blocks of steps; N runs one after another cost N times the
single run's step, so the speedup is N x single / stacked. Evaluation is not timed (it is batched the
same way). MNIST needs no real data: IDX files of MNIST's sizes with random pixels are written to a
temporary folder.

    python scripts/bench_batched.py [--task modular|mnist|parity] [--device cpu|cuda] [--seeds-list 1,4,16,64]
                                    [--steps 10] [--rounds 3] [--cuda-graph]

On CUDA, --cuda-graph also times each with the step replayed from CUDA graphs (grokrun.graphs): columns for
the single run and the stack, eager and graphed, and the speedup of the best stacked variant per run-step
over the single eager run.
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
from grokrun.engine.run import Run
from grokrun.measure import pick_device, synchronize

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import write_random_mnist  # noqa: E402


def make_run(cfg, seeds: list[int], graph: bool = False) -> Run:
    return Run([dataclasses.replace(cfg, seed=s, cuda_graph="on" if graph else "off") for s in seeds])


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
    parser.add_argument("--task", default="modular", choices=("modular", "mnist", "parity"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds-list", default="1,4,16,64")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved blocks per variant; the median is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cuda-graph", action="store_true", help="also time the steps replayed from CUDA graphs")
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
    graphed = args.cuda_graph and device.type == "cuda"
    print(f"{args.task}, EMA, published settings, {cfg.dtype}, torch {torch.__version__}, {name}")
    variants = [("single", 1, False), ("stacked", None, False)]
    if graphed:
        variants += [("single+graph", 1, True), ("stacked+graph", None, True)]
    print(f"{'N':>4} " + " ".join(f"{v + ' ms/step':>22}" for v, _, _ in variants)
          + f" {'best per run-step':>18} {'speedup':>8}")
    for n in (int(x) for x in args.seeds_list.split(",")):
        runs = {v: make_run(cfg, list(range(k or n)), g) for v, k, g in variants}
        ms: dict[str, list[float]] = {v: [] for v in runs}
        # graphed runs: past the learning-rate warmup and every graph's capture (a key is captured at its second
        # occurrence: the epoch's last, smaller batch needs two epochs); eager ones: two steps
        warm = 3 * runs["single"].batches[0].steps_per_epoch + 20 if graphed else 2
        for key, run in runs.items():
            time_steps(run, warm if key.endswith("graph") else 2, device, 1)
        step = 1 + warm
        for r in range(args.rounds):
            for key, run in runs.items():
                ms[key].append(time_steps(run, args.steps, device, step))
            step += args.steps
        med = {k: statistics.median(v) for k, v in ms.items()}
        best = min(med[k] for k in med if k.startswith("stacked")) / n
        print(f"{n:>4} " + " ".join(f"{med[v]:>22.2f}" for v in runs)
              + f" {best:>18.3f} {med['single'] / best:>7.2f}x", flush=True)
        del runs
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

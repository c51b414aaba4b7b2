"""torch.compile against the eager step, side by side in one process: the engine's own step (Run.step, filter
and optimizer included) of one run on each task's published settings (EMA), with --compile off and on, and on
CUDA with the hand-made CUDA graphs (--cuda-graph on) too.

    python scripts/bench_compile.py [--tasks modular,mnist] [--device cpu|cuda] [--steps 20] [--rounds 5]

For each variant: the seconds its first steps took (compiling, or capturing the graphs: the cost a run pays
once), then the median ms/step over interleaved blocks after that. MNIST needs no real data: IDX files of
MNIST's sizes with random pixels are written to a temporary folder.
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


def timed(run: Run, start: int, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` steps from step ``start`` (the device waited for at the end)."""
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        run.step(start + i)
    synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="modular,mnist")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved blocks per variant; the median is kept")
    ap.add_argument("--warm", type=int, default=30, help="first steps, timed apart (compilation, graph capture)")
    args = ap.parse_args()
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; first {args.warm} steps, then ms/step (median of {args.rounds} "
          f"blocks of {args.steps})")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks.split(","):
            overrides = {"task": name, "filter.name": "ema", "device": args.device}
            if name == "mnist":
                write_random_mnist(Path(tmp))
                overrides.update({"mnist.data_dir": tmp, "mnist.download": False})
            cfg = resolve(None, overrides)
            variants = {"eager": {}, "compile": {"compile": True}}
            if device.type == "cuda":
                variants["cuda graphs"] = {"cuda_graph": "on"}
            runs = {k: Run([dataclasses.replace(cfg, cuda_graph="off", **v)]) for k, v in variants.items()}
            # (graphs: past every capture, as in bench_batched: a batch shape's graph is captured at its second
            # occurrence, and the epoch's last, smaller batch comes once an epoch)
            warm = {k: max(args.warm, 3 * run.batches[0].steps_per_epoch + 20) if k == "cuda graphs" else args.warm
                    for k, run in runs.items()}
            first = {k: timed(run, 1, warm[k], device) for k, run in runs.items()}
            ms: dict[str, list[float]] = {k: [] for k in runs}
            step = 1 + max(warm.values())
            for _ in range(args.rounds):
                for k, run in runs.items():
                    ms[k].append(timed(run, step, args.steps, device) / args.steps * 1e3)
                step += args.steps
            eager = statistics.median(ms["eager"])
            for k in runs:
                med = statistics.median(ms[k])
                print(f"  {name:8} {k:12} first {warm[k]:>3} steps {first[k]:7.2f} s   {med:8.3f} ms/step   "
                      f"{eager / med:5.2f}x eager", flush=True)


if __name__ == "__main__":
    main()

"""The training step of a run at its checkpoint, timed with denormal floats kept (torch's default) and flushed
to zero (grokrun's default, --flush-denormals), in one process, alternately.

    python scripts/bench_denormals.py RUN_DIR [--steps 60] [--threads 1]

The run directory is not changed: its checkpoint is loaded into a Run of its config.json and stepped in memory.
docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--steps", type=int, default=60, help="steps timed in each setting, each round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from grokrun import checkpoint
    from grokrun.config import resolve
    from grokrun.engine.run import Run

    torch.set_num_threads(args.threads)
    cfg = resolve(json.loads((args.run_dir / "config.json").read_text()), {})
    saved = checkpoint.load(args.run_dir)
    best: dict[bool, float] = {}
    for _ in range(args.rounds):
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            run = Run([cfg])
            run._load_states([saved])  # the checkpoint's weights, optimizer, filter and batch order, afresh
            start = saved["step"]
            for i in range(3):  # warm
                run.step(start + 1 + i)
            t0 = time.perf_counter()
            for i in range(args.steps):
                run.step(start + 4 + i)
            best[flush] = min(best.get(flush, float("inf")), (time.perf_counter() - t0) / args.steps)
    torch.set_flush_denormal(False)
    print(f"{args.run_dir} at step {saved['step']:,}, {args.threads} thread(s), best of {args.rounds}:")
    print(f"  denormals kept:    {1000 * best[False]:7.1f} ms/step")
    print(f"  denormals flushed: {1000 * best[True]:7.1f} ms/step   ({best[False] / best[True]:.1f}x faster)")


if __name__ == "__main__":
    main()

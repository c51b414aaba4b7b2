"""One evaluation pass of the published modular run's model over its validation split, timed at several
forward-chunk sizes (examples through the model at once), each checked to give the same numbers bitwise.

    python scripts/bench_eval_chunks.py [--threads 1] [--rounds 3]

grokrun's default is grokrun.tasks.base.ClassificationTask.forward_chunk; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the sizes; each size's best is printed")
    ap.add_argument("--sizes", default="100000,4096,2048,1024,512,256")
    args = ap.parse_args()
    import torch

    from grokrun.config import resolve
    from grokrun.engine.run import Run

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve({"task": "modular", "filter": {"name": "ema"}, "seed": 0, "out": tempfile.mkdtemp()}, {})
    task = Run([cfg])._build_tasks()[0]
    x, y = task.data["val"]
    sizes = [int(s) for s in args.sizes.split(",")]
    best: dict[int, float] = {}
    numbers = {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for size in sizes:
                task.forward_chunk = size
                task.evaluate("val")  # warm
                t0 = time.perf_counter()
                for _ in range(5):
                    numbers[size] = task.evaluate("val")
                best[size] = min(best.get(size, float("inf")), (time.perf_counter() - t0) / 5)
    whole = numbers[sizes[0]]
    print(f"validation pass over {len(x):,} examples, {torch.get_num_threads()} thread(s), best of {args.rounds}:")
    for size in sizes:
        same = all(torch.equal(a, b) for a, b in zip(numbers[size], whole))
        print(f"  forward chunk {size:>7,}: {1000 * best[size]:7.1f} ms   numbers {'bitwise the same' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()

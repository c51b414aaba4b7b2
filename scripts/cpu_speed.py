"""How fast this CPU is right now, in two fixed pieces of work: a pure-Python loop (what pytest, matplotlib and
the CLI spend their time in) and single-thread float32 matrix products of the tests' model sizes (what their
training spends it in). Run it just before and after a timed suite (nothing else running): the machines this
project runs on change speed by half as much again within a session, so a suite time is only comparable to
another taken at a like reference (docs/development.md).

    python scripts/cpu_speed.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time


def python_loop() -> float:
    """Seconds for ten million additions in the interpreter."""
    t0 = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - t0


def matmuls() -> float:
    """Milliseconds per product of a (512, 128) and a (128, 512) float32 matrix, on one thread."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(512, 128), torch.randn(128, 512)
    for _ in range(50):  # (warm-up)
        a @ b
    t0 = time.perf_counter()
    for _ in range(2000):
        a @ b
    return (time.perf_counter() - t0) / 2000 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    loops = [python_loop() for _ in range(args.rounds)]
    products = [matmuls() for _ in range(args.rounds)]
    print(f"python loop: {statistics.median(loops):.3f} s (median of {args.rounds}; {min(loops):.3f}-{max(loops):.3f})")
    print(f"matmul 512x128x512, 1 thread: {statistics.median(products):.3f} ms "
          f"(median of {args.rounds}; {min(products):.3f}-{max(products):.3f})")


if __name__ == "__main__":
    main()

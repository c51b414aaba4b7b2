"""One grokrun command in this process, with the wall-clock of each phase of its run: imports, set-up (data,
model, optimizer), the training steps, the evaluations, checkpoints, weight snapshots and the summary. Each
engine function is wrapped in a timer; the rest (the CLI, the loop, the progress display) is what remains.

    python scripts/run_phases.py train --task modular --filter ema --seed 0 --max-steps 1000 --quiet

scripts/bench_whole_run.py --phases runs this beside its timed processes. The training steps are timed as the
loop calls them; on the CPU a step's work is done when it returns, so the phases add up to the whole.
"""

from __future__ import annotations

import sys
import time

T0 = time.perf_counter()
TOTALS: dict[str, float] = {}


def timed(owner, name: str, phase: str) -> None:
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            TOTALS[phase] = TOTALS.get(phase, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def main() -> None:
    import torch  # noqa: F401  (counted in the imports)

    from grokrun.cli import main as grokrun
    from grokrun.engine import records
    from grokrun.engine.run import Run

    TOTALS["imports (torch, grokrun)"] = time.perf_counter() - T0
    timed(Run, "__init__", "set-up: data, model, optimizer")
    timed(Run, "start", "run directory and config.json")
    timed(Run, "step", "training steps")
    timed(records, "evaluate", "evaluations (and metrics rows)")
    timed(records, "save_checkpoints", "checkpoints")
    timed(records, "save_snapshots", "weight snapshots")
    timed(records, "finish", "summary.json")
    sys.argv = ["grokrun", *sys.argv[1:]]
    try:
        grokrun()
    except SystemExit as e:
        if e.code:
            raise
    whole = time.perf_counter() - T0
    TOTALS["the rest: CLI, loop, progress"] = whole - sum(TOTALS.values())
    for phase, seconds in TOTALS.items():
        print(f"phase\t{phase}\t{seconds:.3f}\t{100 * seconds / whole:.1f}")
    print(f"phase\twhole process, after the interpreter's start\t{whole:.3f}\t100.0")


if __name__ == "__main__":
    main()

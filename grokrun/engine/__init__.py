"""THE training loop, shared by every task, one file per concept:

    run.py        a Run: set-up, restore, the loop, the step (what a run is, top to bottom)
    records.py    what a run writes as it goes: metrics rows, checkpoints, snapshots, its summary
    schedules.py  which steps evaluate, checkpoint and snapshot (one EverySteps)
    signals.py    Ctrl-C and SIGTERM: stop after this step, or at once
    progress.py   the bar on a terminal, plain lines elsewhere
    runner.py     runs grouped into stacks of seeds and trained: train, train_seeds, train_runs

    run_dir, summary = train(resolve(None, {"task": "modular", "filter.name": "ema"}))

Importing this package costs nothing (config reads the schedules without torch); its names load on first use.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "Run": "run", "StoppedAtOnce": "signals", "StopSignals": "signals", "stop_signals": "signals",
    "EverySteps": "schedules", "eval_steps": "schedules", "ProgressReport": "progress", "format_seeds": "progress",
    "train": "runner", "train_seeds": "runner", "train_runs": "runner", "group_runs": "runner",
    "batchable": "runner",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_HOMES)

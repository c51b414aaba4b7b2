"""Runs grouped into what trains at once, and trained: the seeds of one config as one stacked model.

    run_dir, summary = train(cfg)                        # one run
    results = train_seeds([cfg_seed0, cfg_seed1, ...])   # seeds together, one stacked model
    train_runs([(cfg, None), (cfg2, resume_dir)], report=print)   # any runs, grouped where they can be
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

from grokrun import checkpoint
from grokrun.noise import draws
from grokrun.optim import stacks
from grokrun.resume import resumable_settings
from grokrun.settings import machine_threads


def train(cfg, quiet: bool = False, console: Console | None = None,
          resume: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one run to its budget (or target), writing its run directory. Returns (run dir, summary).

    With ``resume``, continue that run directory from its checkpoint, as if it had never stopped.
    """
    return train_seeds([cfg], quiet, console, None if resume is None else [resume])[0]


def train_seeds(cfgs: list, quiet: bool = False, console: Console | None = None,
                resume: list[Path] | None = None, node: str = "local") -> list[tuple[Path, dict[str, Any]]]:
    """Train runs that differ only in their seed together, as one stacked model (a single config: the task's
    own module). Each writes its own run directory (the config's out/name), exactly as if trained alone.
    Returns (run dir, summary) per config, in order.

    With ``resume`` (a run directory per config), continue them from their checkpoints, which must all be at
    the same step (as a batched run leaves them when interrupted). ``node``: the Ray node id, in a Ray task; each
    summary's ``ran_on`` lists the host and node of every start and resume.
    """
    import torch

    from grokrun.engine.run import Run

    saved = None if resume is None else [checkpoint.load(d) for d in resume]  # may raise UserError: no writes yet
    launcher_threads, launcher_flushes = torch.get_num_threads(), flushing_denormals()
    # the run's own thread count, whoever launched it (the launcher's back afterwards); a config built in code
    # rather than resolved may still hold 0, which means what it means in a config file
    torch.set_num_threads(cfgs[0].threads or machine_threads())
    torch.set_flush_denormal(cfgs[0].flush_denormals)  # (the run's too; the launcher's back afterwards)
    try:
        run = Run(cfgs, node)  # may raise UserError (no data, no device): still nothing written
        if saved is None:
            run.start()
        else:
            run.restore(saved, [Path(d) for d in resume])
        run.loop(quiet, console)
    finally:
        torch.set_num_threads(launcher_threads)
        torch.set_flush_denormal(launcher_flushes)
    return [(run.run_dirs[i], run.summaries[i]) for i in range(len(cfgs))]


def flushing_denormals() -> bool:
    """Whether this thread's CPU math takes floats below the smallest normal as 0 now (torch sets it, and has
    no getter): a product of one such float is 0 exactly when it does."""
    import torch

    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


def group_runs(runs: list[tuple[Any, Path | None]], batch: bool = True,
               note: Callable[[str], None] | None = None) -> list[list[tuple[Any, Path | None]]]:
    """(config, run directory to resume or None) pairs, grouped into what ``train_seeds`` trains at once: runs
    that differ only in their seed (and, when resumed, whose checkpoints are at the same step), where the task
    can stack its seeds; every other run alone. ``note`` hears why seeds asked to go together cannot."""
    groups: dict[tuple, list] = {}
    for cfg, resume in runs:
        key = (json.dumps(resumable_settings(cfg, seed=False), sort_keys=True, default=str),
               None if resume is None else checkpoint.step_of(resume))
        groups.setdefault(key, []).append((cfg, resume))
    units = []
    for members in groups.values():
        first = members[0][0]
        name, compiled, elementwise = first.task, first.compile, stacks(first.optim.name)
        drawn = draws(first)
        stackable = batch and batchable(name) and not compiled and elementwise and not drawn
        if batch and len(members) > 1 and not stackable and note:
            why = ("--compile compiles one run's model" if compiled
                   else f"{drawn} draws each run's random numbers alone" if drawn
                   else f"the {name} task cannot train seeds together (its model cannot be stacked)"
                   if not batchable(name) else f"the {first.optim.name} optimizer is not known to step stacked seeds "
                   "as alone")
            note(f"{why}; its {len(members)} seeds run one after another")
        if not stackable:
            units.extend([m] for m in members)
            continue
        while members:  # a seed twice (two runs of it in one folder) goes in another group
            unit, rest, seen = [], [], set()
            for m in members:
                (rest if m[0].seed in seen else unit).append(m)
                seen.add(m[0].seed)
            units.append(unit)
            members = rest
    return units


def train_runs(runs: list[tuple[Any, Path | None]], batch: bool = True, quiet: bool = False,
               console: Console | None = None, report: Callable[[Path, dict], None] | None = None) -> bool:
    """Train (or resume) runs, seeds together where they can be (``group_runs``), calling ``report`` for each
    as its group ends. Returns False if the user interrupted (the groups after it are left untrained)."""
    console = console or Console(highlight=False)
    for unit in group_runs(runs, batch, note=lambda text: console.print(escape(text))):
        resumes = [r for _, r in unit]
        results = train_seeds([c for c, _ in unit], quiet, console, None if resumes[0] is None else resumes)
        for run_dir, summary in results:
            if report:
                report(run_dir, summary)
        if any(summary["status"] == "interrupted" for _, summary in results):
            return False
    return True


def batchable(task_name: str) -> bool:
    """Whether the task's seeds can be trained together (Task.batchable), without building it."""
    from grokrun.tasks import task

    module = task(task_name)
    return any(getattr(v, "batchable", False) for v in vars(module).values()
               if isinstance(v, type) and v.__module__ == module.__name__)

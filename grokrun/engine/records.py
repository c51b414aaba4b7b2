"""What a run writes as it trains, each seed into its own run directory: a metrics row per evaluation,
checkpoints, weight snapshots, and the summary, last. The Run (grokrun.engine.run) calls these with itself.

    rows = evaluate(run, step)            # one row per seed still training; the loop's one wait for the device
    save_checkpoints(run, step, [0, 2])   # the seeds at these stack positions, each in a single run's format
    finish(run, i, "completed", step, None)
"""

from __future__ import annotations

import platform
import socket
from typing import Any

import torch

import grokrun
from grokrun import checkpoint, resume, snapshots
from grokrun.config import to_dict
from grokrun.filters import describe_variant
from grokrun.measure import device_name, peak_memory_mb
from grokrun.results import metric_summary
from grokrun.stacking import split_filter, split_optimizer
from grokrun.tasks import task

COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm", "softmax_collapse")


def evaluate(run, step: int) -> list[dict[str, Any]]:
    """One metrics row per seed still training: loss and accuracy on the full validation set, the weight norm,
    and at every ``train_eval_every``-th evaluation (counting step 0's) and the budget's last step, on the full
    training set too; its cells are empty in the other rows. Thresholds are on validation accuracy, so they
    keep every evaluation; the training set, as large, is the other half of an evaluation's cost. Then the
    run's own columns (``extra_columns``): the accuracy on each of the task's ``extra_splits`` and the
    regularizer's penalty on the training set. One wait for the device, whatever the number of seeds."""
    train = run.cfg.train
    scored = len(run.writers[run.active[0]].rows) % train.train_eval_every == 0 or step == train.max_steps
    run.models.train(False)
    with torch.no_grad():
        with run.autocast:
            train_loss, train_acc, collapse = run.models.evaluate("train") if scored else (None, None, None)
            val_loss, val_acc, _ = run.models.evaluate("val")
            extra = [run.models.evaluate(split)[1] for split in run.models.task.extra_splits.values()]
        weight_norm = run.models.weight_norms()  # L2 norm of all parameters together
    if run.regularizer is not None:  # (its exact value needs gradients with respect to the inputs)
        with run.autocast:
            extra.append(run.models.penalty(run.regularizer))
    run.models.train(True)
    metrics = [train_loss, train_acc, val_loss, val_acc, weight_norm, collapse, *extra]
    known = [m for m in metrics if m is not None]
    values = iter(torch.stack([m.detach().double() for m in known]).tolist())  # the one wait, all seeds at once
    columns = [None if m is None else next(values) for m in metrics]
    names = (*COLUMNS, *extra_columns(run))
    rows = []
    for j, i in enumerate(run.active):
        row = dict(zip(names, (None if c is None else c[j] for c in columns)), step=step, wall_s=run.wall)
        run.writers[i].log(row)
        rows.append(row)
    return rows


def extra_columns(run) -> tuple[str, ...]:
    """The metrics.csv columns of this run beyond the usual ones: the task's extra splits, the penalty."""
    return (*run.models.task.extra_splits, *(("penalty",) if run.regularizer is not None else ()))


def seed_states(run) -> list[tuple[dict, dict]]:
    """(optimizer state, filter state) per seed in the stack, each as a single run's."""
    if not run.models.stacked:
        return [(run.optimizer.state_dict(), run.grad_filter.state_dict())]
    return list(zip(split_optimizer(run.optimizer.state_dict(), run.models.params),
                    split_filter(run.grad_filter.state_dict(), run.grad_filter.seed_axes, run.models.n)))


def save_checkpoints(run, step: int, positions: list[int]) -> None:
    """Write checkpoint.pt of the seeds at these stack positions, each in a single run's format (so any of them
    can also be resumed alone); a second Ctrl-C meanwhile waits until they are whole."""
    if not positions:
        return
    with run.stop.shielded():
        per_seed = seed_states(run)
        common = {"step": step, "wall_s": run.wall, "ms": run.timer.ms, "peak_memory_mb": peak_memory(run),
                  "scheduler": run.scheduler.state_dict(), "rng": checkpoint.rng_states()}
        for j in positions:
            i = run.active[j]
            optimizer, filter_state = per_seed[j]
            checkpoint.save(run.run_dirs[i], {
                **common, "fingerprint": run.fingerprints[i], "settings": resume.resumable_settings(run.cfgs[i]),
                "model": run.models.state(j), "optimizer": optimizer, "filter": filter_state,
                "batches": run.batches[i].state_dict(),
                "rows": len(run.writers[i].rows),  # metrics rows so far: a resume checks none was lost
                "ran_on": run.ran_on[i],
            })


def save_snapshots(run, step: int, skip: set[int] = frozenset()) -> None:
    """The weights of every seed still training (but those at stack positions ``skip``), into its run
    directory's snapshots/ (grokrun.snapshots)."""
    if step not in run.snapshot_steps:
        return
    for j, i in enumerate(run.active):
        if j not in skip:
            snapshots.save(run.run_dirs[i], step, run.models.state(j))


def peak_memory(run) -> float:
    """The run's peak so far: this process's, or the checkpoint's for a resumed run, whichever is higher."""
    return max(run.peak_before, peak_memory_mb(run.device))


def place(node: str, step: int) -> dict[str, Any]:
    """Where a run trains from ``step`` on: this host, and the Ray node id (or "local", outside Ray)."""
    return {"host": socket.gethostname(), "node": node, "from_step": step}


def finish(run, i: int, status: str, step: int, diverged_at: int | None) -> dict[str, Any]:
    """Write seed ``i``'s summary.json, last: what the run found, how fast, and how to name it in titles."""
    cfg, rows = run.cfgs[i], run.writers[i].rows
    summary = {
        "status": status, "task": cfg.task, "filter": cfg.filter.name, "seed": cfg.seed,
        "steps": step, "max_steps": cfg.train.max_steps, "diverged_at": diverged_at,
        **metric_summary(rows, asked=(cfg.train.stop_at_acc,), loss_targets=(cfg.train.stop_at_loss,)),  # its targets
        "wall_s": run.wall, "ms_per_step": run.timer.median_ms(), "peak_memory_mb": peak_memory(run),
        "parameters": run.parameters,
        "final": {k: rows[-1].get(k) for k in ("step", "train_loss", "train_acc", "val_loss", "val_acc")},
        "title": {"task": task(cfg.task).describe(getattr(cfg, cfg.task)), "variant": describe_variant(to_dict(cfg))},
        "device": device_name(run.device), "dtype": cfg.dtype, "threads": torch.get_num_threads(),
        "versions": {"grokrun": grokrun.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "ran_on": run.ran_on[i],  # where it trained: one entry per machine it was started or resumed on
    }
    if len(run.cfgs) > 1:  # time and memory were the stack's, shared by these seeds
        summary["trained_with"] = len(run.cfgs)
    if getattr(run.optimizer, "groups", None):  # an optimizer of several parts (muon): which parameters each took
        summary["optimizer_groups"] = run.optimizer.groups
    run.writers[i].finish(summary)
    run.summaries[i] = summary
    return summary

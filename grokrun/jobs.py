"""Runs to train in one output folder: what each needs (reuse, train, resume, restart), and the training of them
in this process or in worker processes. Shared by ``compare`` and ``sweep``.

    jobs = plan_runs(folder, [(group, name, cfg), ...])   # each run's directory is folder / name
    finished = run_jobs(jobs, n_jobs=1, quiet=True, console=console, report=lambda job, summary: ...)

A run already complete in the folder is reused and an interrupted one resumed from its checkpoint, so a
stopped comparison or sweep continues where it was; a run of other settings under the same name is refused.
Runs that differ only in their seed are trained together as one stacked model where the task allows.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from grokrun.config import resolve, to_dict
from grokrun.errors import UserError
from grokrun.results import CHECKPOINT, CONFIG, FINAL, RUN_FILES, tmp_name
from grokrun.runs import differences, first_difference, is_run_dir, read_run, variant_settings
from grokrun.settings import machine_cores

# What a run directory can hold before its first evaluation is written: its files, or their temporary twins.
_STARTED_FILES = {*RUN_FILES, *(tmp_name(Path(f)).name for f in RUN_FILES)}


@dataclass
class Job:
    variant: str  # what the run belongs to: a variant of a comparison, a point of a sweep
    seed: int
    config: Any  # a RunConfig whose out and name point at ``path``
    path: Path
    action: str  # "reuse" | "train" | "resume" (from its checkpoint) | "restart" (unfinished, no checkpoint)


def plan_runs(out: Path, runs: list[tuple[str, str, Any]], what: str = "comparison") -> list[Job]:
    """A Job per (variant, run directory name, config). Raises UserError if the folder holds a different run
    (``what`` names the comparison or sweep in that message)."""
    jobs = []
    for variant, name, cfg in runs:
        cfg = dataclasses.replace(cfg, out=str(out), name=name)
        path = out / name
        jobs.append(Job(variant, cfg.seed, cfg, path, _action(path, cfg, what)))
    return jobs


def _action(path: Path, cfg, what: str) -> str:
    if not path.exists():
        return "train"
    if not is_run_dir(path):
        if {p.name for p in path.iterdir()} <= _STARTED_FILES:
            return "restart"  # created, but stopped before its files were written
        raise UserError(f"{path} exists and is not a run directory; move it away or choose another --out")
    try:
        stored = to_dict(resolve(path / CONFIG, {}))
    except UserError as e:
        raise UserError(f"{path} holds a run that cannot be read ({e}); choose another --out") from None
    diff = differences(variant_settings(stored), variant_settings(to_dict(cfg)))
    if stored["seed"] != cfg.seed:
        diff["seed"] = (stored["seed"], cfg.seed)
    if diff:
        key, was, now, more = first_difference(diff)
        raise UserError(f"{path} was trained with {key} = {was!r}, this {what} asks for {now!r}{more}; "
                        "choose another --out")
    try:
        status = read_run(path).summary
    except (OSError, ValueError):
        status = None
    if status and status.get("status") in FINAL:
        return "reuse"
    return "resume" if (path / CHECKPOINT).is_file() else "restart"




def check_fits(n_jobs: int, cfgs: list) -> None:
    """UserError unless ``n_jobs`` runs at once, each with its own --threads, fit this machine's cores: more
    would slow each other many times over (a launcher never changes a run's threads, which are its numbers')."""
    threads = max((c.threads for c in cfgs), default=1)
    have = machine_cores()
    if n_jobs > 1 and n_jobs * threads > have:
        fewer = f"use --jobs {max(1, have // threads)}"
        fix = (f"add --threads {have // n_jobs} (each run's own count, in its config.json) or {fewer}"
               if threads > 1 and have >= n_jobs else fewer)
        raise UserError(f"--jobs {n_jobs} at {threads} thread{'s' * (threads != 1)} per run needs {n_jobs * threads} "
                        f"cores and this machine has {have}: {fix}")


def run_jobs(jobs: list[Job], n_jobs: int, quiet: bool, console, report: Callable[[Job, dict], None],
             batch: bool = True) -> bool:
    """Train every job not reused, the seeds of a variant together where the task allows (``batch``).
    Returns False if the user interrupted (the rest are left untrained)."""
    from grokrun.engine import group_runs, train_runs

    todo = [j for j in jobs if j.action != "reuse"]
    for job in todo:
        if job.action == "restart":
            shutil.rmtree(job.path)
    by_path = {j.path: j for j in todo}
    runs = [(j.config, j.path if j.action == "resume" else None) for j in todo]

    def reported(run_dir: Path, summary: dict) -> None:
        report(by_path[Path(run_dir)], summary)

    if n_jobs <= 1:
        return train_runs(runs, batch, quiet, console, reported)
    units = group_runs(runs, batch, note=lambda text: console.print(escape(text)))
    if len(units) <= 1:
        return train_runs(runs, batch, quiet, console, reported)
    return _run_parallel(units, n_jobs, reported)


def _run_parallel(units: list[list[tuple]], n_jobs: int, report) -> bool:
    """Train ``units`` (runs trained together) in ``n_jobs`` worker processes, reporting each run as it ends."""
    ctx = get_context("spawn")
    stop = ctx.Event()  # set on Ctrl-C: units already handed to a worker then start no training
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_worker_init, initargs=(stop,))
    # (each run as its config.json's contents: the worker resolves it, loading the plugins it names)
    pending: dict[Future, list] = {pool.submit(_worker_train, [(to_dict(c), r) for c, r in unit]): unit
                                   for unit in units}

    def collect(futures) -> None:
        for future in futures:
            pending.pop(future)
            for run_dir, summary in future.result() or []:
                report(run_dir, summary)
                if summary["status"] == "interrupted":
                    stop.set()

    try:
        while pending and not stop.is_set():
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
    except KeyboardInterrupt:
        stop.set()
    finally:
        # Ctrl-C reaches the workers too: the engine ends each running run as "interrupted" and writes it.
        pool.shutdown(wait=True, cancel_futures=True)
    collect([f for f in pending if f.done() and not f.cancelled()])
    return not stop.is_set()


_STOP = None


def _worker_init(stop) -> None:
    global _STOP
    _STOP = stop
    _die_with(os.getppid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle workers ignore Ctrl-C; a training one handles it
    # (each run sets its own thread count: grokrun.engine.runner.train_seeds)


def _die_with(parent: int) -> None:
    """A worker ends when the sweep or comparison that started it is gone (kill -9 leaves it no time to say so):
    otherwise it would train on beside the next command into the same folder. Checked twice a second; what it
    had written stays consistent (atomic writes), and the next command resumes its runs from their checkpoints."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="grokrun-parent-watch").start()


def _worker_train(unit: list[tuple]) -> list | None:
    """Train (or resume) runs together in a worker; None if the comparison or sweep was stopped before they began."""
    from grokrun.engine import train_seeds

    if _STOP is not None and _STOP.is_set():
        return None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        resumes = [r for _, r in unit]
        results = train_seeds([resolve(c, {}) for c, _ in unit], quiet=True,
                              resume=None if resumes[0] is None else resumes)
        if _STOP is not None and any(s["status"] == "interrupted" for _, s in results):
            _STOP.set()  # (before this worker takes the next unit: the sweep may not have heard the Ctrl-C yet)
        return results
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

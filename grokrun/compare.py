"""Variants x seeds -> runs -> one table and an overlay plot, in one output folder.

    grokrun compare --task modular --filter ema --seeds 0,1,2
    finished = compare(variants([], ["ema"], {}), [0, 1, 2], jobs=1, out=None, threshold=0.95, fmt="png", ...)

The folder holds one run directory per (variant, seed), named ``<variant>-seed<N>``, and ``compare.json``
(the variants' settings). A run already complete there is reused and an interrupted one resumed from its
checkpoint, so a stopped comparison continues where it was. Training happens in the engine, in this process or in
worker processes (``jobs``); the table is read back from the run directories, as for any other runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from grokrun.config import RunBase, resolve, to_dict
from grokrun.errors import UserError
from grokrun.results import (CHECKPOINT, CONFIG, FINAL, RUN_FILES, check_folder, differences, first_difference,
                             group_variants, is_run_dir, load_runs, make_folder, read_run, tmp_name,
                             variant_settings, write_json_atomic)
from grokrun.tasks import task

# What a run directory can hold before its first evaluation is written: its files, or their temporary twins.
_STARTED_FILES = {*RUN_FILES, *(tmp_name(Path(f)).name for f in RUN_FILES)}


@dataclass
class Variant:
    name: str
    config: Any  # a RunConfig; seed, out and name are set per run


def variants(files: list[Path], filters: list[str], overrides: dict[str, Any]) -> list[Variant]:
    """The variants a compare command asks for: one per config file, or the baseline and each filter."""
    for p in files:
        if not p.exists():
            raise UserError(f"no such config file or run directory: {p}")
        if p.is_dir():
            raise UserError("give config files or run directories, not both")
    if files and filters:
        raise UserError("give config files or --filter, not both")
    if files:
        return variants_from_files(files, overrides)
    return variants_from_filters(overrides.get("task"), filters, overrides)


def variants_from_filters(task_name: str | None, filters: list[str], overrides: dict[str, Any]) -> list[Variant]:
    """The baseline first, then each filter with the task's published settings (or the filter's own defaults,
    where none were published); no filter given: every published one. Overrides apply to all."""
    task_name = task_name or RunBase.task
    resolve(None, {**overrides, "task": task_name})  # validates the task and overrides before anything else
    names = ["none", *[f for f in filters if f != "none"]] if filters else list(task(task_name).PRESETS)
    found = []
    for filt in dict.fromkeys(names):
        cfg = resolve(None, {**overrides, "task": task_name, "filter.name": filt})
        found.append(Variant("baseline" if filt == "none" else filt, cfg))
    return found


def variants_from_files(files: list[Path], overrides: dict[str, Any]) -> list[Variant]:
    """One variant per config file, named after it; the first is the baseline."""
    found: list[Variant] = []
    for path in files:
        cfg = resolve(path, overrides)
        stem = path.parent.name if path.name == CONFIG else path.stem
        name, i = stem, 2
        while any(v.name == name for v in found):
            name, i = f"{stem}-{i}", i + 1
        found.append(Variant(name, cfg))
    tasks = {v.config.task for v in found}
    if len(tasks) > 1:
        raise UserError(f"the config files are for different tasks ({', '.join(sorted(tasks))}); "
                        "compare variants of one task")
    return found


def _manifest(variants: list[Variant]) -> list[dict[str, Any]]:
    return [{"name": v.name, "settings": variant_settings(to_dict(v.config))} for v in variants]


def output_folder(out: Path | None, variants: list[Variant], root: Path = Path("results")) -> tuple[Path, bool]:
    """The folder to compare in, and whether it was found rather than given or new.

    Without ``--out``, the newest ``results/compare-<task>-*`` folder holding the same variants is
    continued, so running the same command again reuses its runs; otherwise a new folder is named by the time.
    """
    if out is not None:
        return out, False
    task = variants[0].config.task
    manifest = _manifest(variants)
    for folder in sorted(root.glob(f"compare-{task}-*"), reverse=True):
        try:
            stored = json.loads((folder / "compare.json").read_text())["variants"]
            # completed with today's defaults, so settings added since a folder was made still match
            stored = [{"name": v["name"], "settings": variant_settings(to_dict(resolve(v["settings"], {})))}
                      for v in stored]
        except (OSError, ValueError, KeyError, TypeError):  # UserError is a ValueError
            continue
        if stored == manifest:
            return folder, True
    base = root / f"compare-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, i = base, 2
    while folder.exists():  # another comparison started within the same second
        folder, i = base.with_name(f"{base.name}-{i}"), i + 1
    return folder, False


@dataclass
class Job:
    variant: str
    seed: int
    config: Any  # a RunConfig
    path: Path
    action: str  # "reuse" | "train" | "resume" (from its checkpoint) | "restart" (unfinished, no checkpoint)


def plan(out: Path, variants: list[Variant], seeds: list[int]) -> list[Job]:
    """What to do for each (variant, seed). Raises UserError if the folder holds a different run."""
    jobs = []
    for v in variants:
        for seed in seeds:
            name = f"{v.name}-seed{seed}"
            cfg = dataclasses.replace(v.config, seed=seed, out=str(out), name=name)
            path = out / name
            jobs.append(Job(v.name, seed, cfg, path, _action(path, cfg)))
    return jobs


def _action(path: Path, cfg) -> str:
    if not path.exists():
        return "train"
    if not is_run_dir(path):
        if {p.name for p in path.iterdir()} <= _STARTED_FILES:
            return "restart"  # created, but stopped before its files were written
        raise UserError(f"{path} exists and is not a run directory; move it away or choose another --out")
    try:
        stored = to_dict(resolve(path / CONFIG, {}))
    except UserError as e:
        raise UserError(f"{path} holds a run this comparison cannot read ({e}); choose another --out") from None
    diff = differences(variant_settings(stored), variant_settings(to_dict(cfg)))
    if stored["seed"] != cfg.seed:
        diff["seed"] = (stored["seed"], cfg.seed)
    if diff:
        key, was, now, more = first_difference(diff)
        raise UserError(f"{path} was trained with {key} = {was!r}, this comparison asks for {now!r}{more}; "
                        "choose another --out")
    try:
        status = read_run(path).summary
    except (OSError, ValueError):
        status = None
    if status and status.get("status") in FINAL:
        return "reuse"
    return "resume" if (path / CHECKPOINT).is_file() else "restart"


def write_manifest(out: Path, variants: list[Variant], seeds: list[int]) -> None:
    make_folder(out)
    path = out / "compare.json"
    try:
        known = json.loads(path.read_text()).get("seeds", [])
    except (OSError, ValueError, AttributeError):
        known = []
    write_json_atomic(path, {"task": variants[0].config.task, "variants": _manifest(variants),
                             "seeds": list(dict.fromkeys([*known, *seeds]))})


# --- running ------------------------------------------------------------------------------------------

def compare(found: list[Variant], seeds: list[int], jobs: int, out: Path | None, threshold: float, fmt: str,
            quiet: bool, console, err, batch: bool = True) -> bool:
    """Train what the folder lacks, print a line per run as it ends, then the table; write the table and the
    overlay plot into the folder. Returns False if the user interrupted (the same command continues)."""
    from grokrun.engine import StoppedAtOnce
    from grokrun.table import count, headline

    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if out is not None:
        check_folder(out)
    folder, continued = output_folder(out, found)
    planned = plan(folder, found, seeds)
    write_manifest(folder, found, seeds)
    todo = sum(j.action != "reuse" for j in planned)
    resumed = sum(j.action == "resume" for j in planned)
    note = " (continuing the comparison found there; --out DIR starts another)" if continued else ""
    console.print(escape(f"compare: {count(len(found), 'variant')} × {count(len(seeds), 'seed')} in {folder}{note}"))
    console.print(f"{count(todo - resumed, 'run')} to train, " + (f"{resumed} to resume, " if resumed else "")
                  + f"{len(planned) - todo} already complete and reused")
    done = [len(planned) - todo]

    def report(job: Job, summary: dict) -> None:
        done[0] += 1
        console.print(escape(f"[{done[0]}/{len(planned)}] {job.variant} seed {job.seed}: "
                             f"{headline(read_run(job.path), threshold)}"))

    try:
        finished = run_jobs(planned, jobs, quiet, console, report, batch)
    except KeyboardInterrupt:  # between runs; a run in progress ends itself as "interrupted"
        finished = False
    except StoppedAtOnce as e:  # a second Ctrl-C: that run has no summary; its checkpoint remains
        err.print(escape(f"stopped at once (a second interrupt) in {e.resume}"))
        finished = False
    by_variant = [(v.name, [read_run(j.path) for j in planned if j.variant == v.name and is_run_dir(j.path)])
                  for v in found]
    by_variant = [(n, r) for n, r in by_variant if r]
    if by_variant:
        report_table(by_variant, folder, threshold, fmt, console, details=_variant_lines(found))
    if jobs > 1 and todo > 1:
        console.print(f"[dim]{jobs} runs trained at once: their ms/step and times include the contention "
                      "between them; compare them only with each other.[/dim]")
    if not finished:
        console.print("[yellow]interrupted[/yellow]: " +
                      escape(f"the same command continues the comparison in {folder}"))
    return finished


def _variant_lines(found: list[Variant]) -> str:
    from grokrun.filters import describe_variant

    return "Variants: " + "; ".join(
        f"{v.name} = {describe_variant(to_dict(v.config))} · {v.config.train.max_steps:,} steps" for v in found)


def tabulate_existing(paths: list[Path], out: Path | None, threshold: float, fmt: str, console, warn) -> None:
    """The table of runs already trained (run directories, or folders of them), grouped into variants."""
    if out is not None:
        check_folder(out)
    runs, problems = load_runs(paths)
    for problem in problems:
        warn(problem)
    if not runs:
        raise UserError(f"no run directories in {', '.join(map(str, paths))}")
    tasks = sorted({str(r.config.get("task")) for r in runs})
    if len(tasks) > 1:
        raise UserError(f"the runs are of several tasks ({', '.join(tasks)}); compare the runs of one task")
    grouped, repeats = group_variants(runs)
    for problem in repeats:
        warn(problem)
    folder = out or (paths[0] if len(paths) == 1 and not is_run_dir(paths[0]) else None)
    report_table(grouped, folder, threshold, fmt, console)
    if folder is None:
        console.print("(not saved: give --out DIR to write comparison.md, comparison.csv and the overlay plot)")


def report_table(grouped, folder: Path | None, threshold: float, fmt: str, console, details: str = "") -> None:
    """Print the table; with a folder, also write comparison.md, comparison.csv and the overlay plot."""
    from grokrun.plot import describe_task, plot_overlay
    from grokrun.table import render_rich, tabulate, write_csv, write_markdown

    rows = tabulate(grouped, threshold)
    title = f"{describe_task(grouped[0][1][0])} · threshold {threshold:g} val acc"
    console.print(render_rich(rows, threshold, title))
    if folder is None:
        return
    make_folder(folder)
    try:
        write_markdown(rows, folder / "comparison.md", threshold, title, details)
        write_csv(rows, folder / "comparison.csv", threshold)
        figure = plot_overlay(grouped, folder / f"comparison.{fmt}", threshold)
    except OSError as e:
        raise UserError(f"cannot write the comparison into {folder}: {e.strerror or e}") from None
    drawn = f" and {figure.name}" if figure else " (no overlay plot: no run has an evaluation after step 0 to draw)"
    console.print(escape(f"wrote {folder / 'comparison.md'}, comparison.csv{drawn}"))


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
    threads = max(1, (os.cpu_count() or 1) // n_jobs)  # no oversubscription: each worker gets its share
    ctx = get_context("spawn")
    stop = ctx.Event()  # set on Ctrl-C: units already handed to a worker then start no training
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_worker_init,
                               initargs=(threads, stop))
    pending: dict[Future, list] = {pool.submit(_worker_train, unit): unit for unit in units}

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


def _worker_init(threads: int, stop) -> None:
    import torch

    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle workers ignore Ctrl-C; a training one handles it
    torch.set_num_threads(threads)


def _worker_train(unit: list[tuple]) -> list | None:
    """Train (or resume) runs together in a worker; None if the comparison was stopped before they began."""
    from grokrun.engine import train_seeds

    if _STOP is not None and _STOP.is_set():
        return None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        resumes = [r for _, r in unit]
        return train_seeds([c for c, _ in unit], quiet=True, resume=None if resumes[0] is None else resumes)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

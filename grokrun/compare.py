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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from grokrun.config import RunBase, resolve, to_dict
from grokrun.errors import UserError
from grokrun.jobs import Job, check_fits, plan_runs, run_jobs
from grokrun.report import with_command
from grokrun.results import (CONFIG, add_thresholds, check_folder, in_use, make_folder, manifest_history, reuse_or_new,
                             write_json_atomic)
from grokrun.runs import group_variants, is_run_dir, load_runs, read_run, variant_settings
from grokrun.tasks import task


@dataclass
class Variant:
    name: str
    config: Any  # a RunConfig; seed, out and name are set per run


def variants(files: list[Path], filters: list[str], overrides: dict[str, Any], lr_matched: bool = False
             ) -> list[Variant]:
    """The variants a compare command asks for: one per config file, or the baseline and each filter (and, with
    ``lr_matched``, the baselines whose learning rate matches each amplifying filter's larger step)."""
    for p in files:
        if not p.exists():
            raise UserError(f"no such config file or run directory: {p}")
        if p.is_dir():
            raise UserError("give config files or run directories, not both")
    if files and filters:
        raise UserError("give config files or --filter, not both")
    if files:
        if lr_matched:
            raise UserError("--lr-matched adds baselines to --filter variants; with config files, write them as files")
        return variants_from_files(files, overrides)
    found = variants_from_filters(overrides.get("task"), filters, overrides)
    return with_lr_matched(found, overrides) if lr_matched else found


def with_lr_matched(found: list[Variant], overrides: dict[str, Any]) -> list[Variant]:
    """After the baseline, a baseline per distinct 1 + lamb of the amplifying filter variants, its learning rate
    multiplied by that: with lamb 2 the filtered gradient is up to 3x the raw one, so a fair baseline takes
    steps up to 3x larger too. Named "baseline-lr×3"."""
    from grokrun.filters import defaults_of

    base = found[0].config
    factors = []
    for v in found[1:]:
        if "lamb" in defaults_of(v.config.filter.name):  # a filter that amplifies (not ⊥Grad alone)
            factors.append(1 + v.config.filter.lamb)
    extra = []
    for factor in dict.fromkeys(factors):
        cfg = resolve(None, {**overrides, "task": base.task, "filter.name": "none", "optim.lr": base.optim.lr * factor})
        extra.append(Variant(f"baseline-lr×{factor:g}", cfg))
    return [found[0], *extra, *found[1:]]


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
    manifest = _manifest(variants)

    def same_variants(folder: Path) -> bool:
        stored = json.loads((folder / "compare.json").read_text())["variants"]
        # completed with today's defaults, so settings added since a folder was made still match
        return [{"name": v["name"], "settings": variant_settings(to_dict(resolve(v["settings"], {})))}
                for v in stored] == manifest

    return reuse_or_new(root, f"compare-{variants[0].config.task}", same_variants)


def plan(out: Path, variants: list[Variant], seeds: list[int]) -> list[Job]:
    """What to do for each (variant, seed). Raises UserError if the folder holds a different run."""
    return plan_runs(out, [(v.name, f"{v.name}-seed{seed}", dataclasses.replace(v.config, seed=seed))
                           for v in variants for seed in seeds])


def write_manifest(out: Path, variants: list[Variant], seeds: list[int]) -> None:
    make_folder(out)
    path = out / "compare.json"
    known, commands = manifest_history(path)
    write_json_atomic(path, {"task": variants[0].config.task, "variants": _manifest(variants),
                             "seeds": list(dict.fromkeys([*known, *seeds])), "commands": with_command(commands)})


# --- running ------------------------------------------------------------------------------------------

def compare(found: list[Variant], seeds: list[int], jobs: int, out: Path | None, threshold: float, fmt: str,
            quiet: bool, console, err, batch: bool = True) -> bool:
    """Train what the folder lacks, print a line per run as it ends, then the table; write the table and the
    overlay plot into the folder. Returns False if the user interrupted (the same command continues)."""
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    check_fits(jobs, [v.config for v in found])
    if out is not None:
        check_folder(out)
    folder, continued = output_folder(out, found)
    with in_use(folder, "comparison"):  # (a second compare into the same folder is refused while this one runs)
        return _compare_in(folder, continued, found, seeds, jobs, threshold, fmt, quiet, console, err, batch)


def _compare_in(folder: Path, continued: bool, found: list[Variant], seeds: list[int], jobs: int, threshold: float,
                fmt: str, quiet: bool, console, err, batch: bool) -> bool:
    from grokrun.engine import StoppedAtOnce
    from grokrun.table import count
    from grokrun.table_write import headline

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
    for job in planned:
        add_thresholds(job.path, (threshold,))
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
    from grokrun.table import tabulate
    from grokrun.table_write import render_rich, write_csv, write_markdown

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
        write_page(folder, grouped, rows, threshold, [figure] if figure else [])
    except OSError as e:
        raise UserError(f"cannot write the comparison into {folder}: {e.strerror or e}") from None
    drawn = f", {figure.name}" if figure else " (no overlay plot: no run has an evaluation after step 0 to draw)"
    console.print(escape(f"wrote {folder / 'comparison.md'}, comparison.csv{drawn} and report.html"))


def write_page(folder: Path, grouped, rows, threshold: float, figures: list[Path]) -> None:
    """The comparison's report.html (grokrun.report): its command, the variants in words, the table, the figure,
    every variant's curves, and each run linked to its own figures."""
    from grokrun.plot import describe_filter, describe_task
    from grokrun.report import Page, point_colors, run_columns, run_row, write_report
    from grokrun.table_write import columns

    try:
        commands = json.loads((folder / "compare.json").read_text()).get("commands", [])
    except (OSError, ValueError, AttributeError):
        commands = with_command([])
    runs = [r for _, rs in grouped for r in rs]
    settings = [("task", describe_task(runs[0]))]
    settings += [(name, f"{describe_filter(rs[0])} · {rs[0].config.get('train', {}).get('max_steps', 0):,} steps "
                        f"· seeds {', '.join(str(r.config.get('seed')) for r in rs)}") for name, rs in grouped]
    notes = (f"Threshold {threshold:g} validation accuracy. Steps to the threshold are the first evaluated step at or "
             "above it; a median whose seed did not get there within its budget is a lower bound (≥).")
    table = [{"variant": name, **run_row(r, [threshold], folder)} for name, rs in grouped for r in rs]
    write_report(folder, Page("comparison", commands, folder.name, settings, notes, figures, grouped,
                              point_colors([name for name, _ in grouped]), ["variant", *run_columns(threshold)],
                              table, summary=columns(rows, threshold), threshold=threshold))

"""Grids of runs: every combination of the swept settings, times the seeds, in one folder; a table and figures.

    grokrun sweep --task modular --op add,div --train-frac 0.2:0.6:0.1 --filter none,ema --seeds 0-2 --threshold 0.99
    grokrun sweep configs/sweeps/power_fraction.toml

A swept setting is any config flag given several values: a comma list (``add,div``) or an inclusive numeric
range ``lo:hi:step`` (``0.2:0.6:0.1``), or a ``[grid]`` entry of a TOML grid file. The folder holds one run
directory per (point, seed), named after the point's values, ``sweep.json`` (what was swept) and, once trained,
``sweep.csv`` (one row per run), the figures (grokrun.plot_sweep) and ``report.html``. As with compare, a
run already complete there is reused and an interrupted one resumed; each point's seeds train as one stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from grokrun.errors import UserError
from grokrun.grid import (MAX_RUNS, Axis, Grid, configs, grid_from, parse_values,  # noqa: F401 (sweep's names)
                          read_grid_file)
from grokrun.jobs import check_fits, plan_runs, run_jobs
from grokrun.report import with_command
from grokrun.results import SWEEP_MANIFEST as MANIFEST
from grokrun.results import (add_thresholds, check_folder, in_use, make_folder, manifest_history, reuse_or_new,
                             write_json_atomic)
from grokrun.runs import read_run
from grokrun.sweep_results import REPORT, TABLE, read_manifest, rows, write_outputs  # noqa: F401 (sweep's names)


# --- the folder ----------------------------------------------------------------------------------------------

def _manifest(grid: Grid, task: str) -> dict[str, Any]:
    return {"task": task, "fixed": grid.fixed, "axes": [a.as_dict() for a in grid.axes]}


def output_folder(out: Path | None, grid: Grid, task: str, root: Path = Path("results")) -> tuple[Path, bool]:
    """``--out``, or the newest results/sweep-<task>-* of the same grid (so the same command continues it), or a
    new results/sweep-<task>-<time>. Returns (folder, whether it was found)."""
    if out is not None:
        return out, False
    wanted = json.loads(json.dumps(_manifest(grid, task)))

    def same_grid(folder: Path) -> bool:
        stored = json.loads((folder / MANIFEST).read_text())
        return {k: stored.get(k) for k in wanted} == wanted

    return reuse_or_new(root, f"sweep-{task}", same_grid)


def write_manifest(folder: Path, grid: Grid, task: str) -> None:
    make_folder(folder)
    known, commands = manifest_history(folder / MANIFEST)
    write_json_atomic(folder / MANIFEST, {**_manifest(grid, task), "seeds": list(dict.fromkeys([*known, *grid.seeds])),
                                          "threshold": grid.threshold, "commands": with_command(commands)})


# --- running -------------------------------------------------------------------------------------------------

@dataclass
class Backend:
    """Where the runs train: "local" (this process, or ``jobs`` worker processes) or "ray" (Ray tasks at
    ``address``, or a local Ray instance, each with ``cpus`` CPUs, by default as many as its runs' threads, and
    ``gpus`` GPUs)."""
    name: str = "local"
    jobs: int = 1
    address: str | None = None
    cpus: float | None = None
    gpus: float = 0.0


BACKENDS = ("local", "ray")


def sweep(grid: Grid, backend: Backend, out: Path | None, fmt: str, quiet: bool, console, batch: bool = True) -> bool:
    """Train what the folder lacks, a line per run as it ends; then write sweep.csv, the figures and report.html.
    Returns False if the user interrupted (the same command continues). The folder is held while it runs: a
    second sweep into it is refused, as is a sweep of another grid into a folder that holds one."""
    if backend.name not in BACKENDS:
        raise UserError(f"unknown backend {backend.name!r}; choose one of: {', '.join(BACKENDS)}")
    if backend.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {backend.jobs}")
    if backend.name == "local" and (backend.address is not None or backend.gpus):
        raise UserError("--address and --gpus-per-run are for --backend ray")
    runs = configs(grid)
    if backend.name == "local":
        check_fits(backend.jobs, [cfg for _, _, cfg in runs])
    elif backend.cpus is None:  # each Ray task asks for the CPUs its runs' threads use
        backend.cpus = float(max(cfg.threads for _, _, cfg in runs))
    if out is not None:
        check_folder(out)
    task = runs[0][2].task
    folder, continued = output_folder(out, grid, task)
    check_same_grid(folder, grid, task)
    if backend.name == "ray":  # (its errors come before anything is written)
        from grokrun.cluster import connect

        connect(backend.address, backend.cpus, backend.gpus, folder)
    with in_use(folder, "sweep"):
        return _train(folder, continued, runs, grid, task, backend, fmt, quiet, console, batch)


def check_same_grid(folder: Path, grid: Grid, task: str) -> None:
    """UserError if ``folder`` holds a sweep of another grid (more seeds of the same grid are welcome)."""
    stored = read_manifest(folder)
    if stored is None:
        return
    wanted = json.loads(json.dumps(_manifest(grid, task)))
    if stored.get("task") != task:
        difference = f"task {stored.get('task')} there, {task} here"
    elif stored.get("axes") != wanted["axes"]:
        def axes(m):
            return "; ".join(f"{a['name']} = {', '.join(map(str, a['values']))}" for a in m.get("axes", [])) or "none"
        difference = f"swept {axes(stored)} there, {axes(wanted)} here"
    elif stored.get("fixed", {}) != wanted["fixed"]:
        there, here = stored.get("fixed", {}), wanted["fixed"]
        key = next(k for k in sorted({*there, *here}) if there.get(k) != here.get(k))
        difference = f"{key} = {there.get(key, '(unset)')} there, {here.get(key, '(unset)')} here"
    else:
        return
    raise UserError(f"{folder} holds a sweep of another grid ({difference}); choose another --out")


def _train(folder: Path, continued: bool, runs: list, grid: Grid, task: str, backend: Backend, fmt: str,
           quiet: bool, console, batch: bool) -> bool:
    from grokrun.report import ran_on
    from grokrun.table import count
    from grokrun.table_write import headline

    planned = plan_runs(folder, runs, what="sweep")
    write_manifest(folder, grid, task)
    todo = sum(j.action != "reuse" for j in planned)
    resumed = sum(j.action == "resume" for j in planned)
    note = " (continuing the sweep found there; --out DIR starts another)" if continued else ""
    points = len(planned) // len(grid.seeds)
    console.print(escape(f"sweep: {count(points, 'point')} × {count(len(grid.seeds), 'seed')} in {folder}{note}"))
    console.print(f"{count(todo - resumed, 'run')} to train, " + (f"{resumed} to resume, " if resumed else "")
                  + f"{len(planned) - todo} already complete and reused")
    done = [len(planned) - todo]

    def report(job, summary: dict) -> None:
        done[0] += 1
        where = f" (on {ran_on(summary)})" if backend.name == "ray" else ""
        console.print(escape(f"[{done[0]}/{len(planned)}] {job.variant.replace('_', ' ')} seed {job.seed}: "
                             f"{headline(read_run(job.path), grid.threshold)}{where}"))

    try:
        if backend.name == "ray":
            from grokrun.distributed import run_on_ray

            finished = run_on_ray(planned, backend.address, backend.cpus, backend.gpus, batch, console, report)
        else:
            finished = run_jobs(planned, backend.jobs, quiet, console, report, batch)
    except KeyboardInterrupt:
        finished = False
    for job in planned:
        add_thresholds(job.path, (grid.threshold,))
    written = write_outputs(folder, fmt)
    if written:
        console.print(escape(f"wrote {', '.join(str(p) for p in written)}"))
    if not finished:
        console.print("[yellow]interrupted[/yellow]: " + escape(f"the same command continues the sweep in {folder}"))
    return finished

"""Grids of runs: every combination of the swept settings, times the seeds, in one folder; a table and figures.

    grokrun sweep --task modular --op add,div --train-frac 0.2:0.6:0.1 --filter none,ema --seeds 0-2 --threshold 0.99
    grokrun sweep configs/sweeps/power_fraction.toml

A swept setting is any config flag given several values: a comma list (``add,div``) or an inclusive numeric
range ``lo:hi:step`` (``0.2:0.6:0.1``), or a ``[grid]`` entry of a TOML grid file. The folder holds one run
directory per (point, seed), named after the point's values, ``sweep.json`` (what was swept) and, once trained,
``sweep.csv`` (one row per run), the figures (grokrun.plot.plot_sweep) and ``report.html``. As with compare, a
run already complete there is reused and an interrupted one resumed; each point's seeds train as one stack.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import math
import statistics
import time
import tomllib
from dataclasses import dataclass, field
from html import escape as html_escape
from pathlib import Path
from typing import Any

from rich.markup import escape

from grokrun.config import parse_seeds, resolve
from grokrun.errors import UserError
from grokrun.jobs import plan_runs, run_jobs
from grokrun.results import (SWEEP_MANIFEST as MANIFEST, THRESHOLDS, check_folder, first_at, is_run_dir, make_folder, read_run,
                             write_json_atomic, write_text_atomic)

TABLE = "sweep.csv"
REPORT = "report.html"
MAX_RUNS = 100_000


@dataclass
class Axis:
    key: str  # the override key: "filter.name", "*.train_frac" (the chosen task's option)
    name: str  # as on the command line: "filter", "train-frac"
    values: list[Any]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "values": self.values}


@dataclass
class Grid:
    fixed: dict[str, Any]  # override key -> value, for every run
    axes: list[Axis]
    seeds: list[int] = field(default_factory=lambda: [0])
    threshold: float = 0.99

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the axes' values, the first axis varying slowest."""
        return [dict(zip((a.key for a in self.axes), combo)) for combo in itertools.product(*(a.values for a in self.axes))]

    def point_name(self, point: dict[str, Any]) -> str:
        """"op=add_train-frac=0.2_filter=ema": the run directories' stem, and the point's label."""
        return "_".join(f"{a.name}={_text(point[a.key])}" for a in self.axes) or "point"


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


# --- reading a grid ------------------------------------------------------------------------------------------

def parse_values(text: str, kind: type, flag: str) -> list[Any]:
    """"add,div" -> ["add", "div"]; "0.2:0.6:0.1" -> [0.2, 0.3, 0.4, 0.5, 0.6] (inclusive, rounded to 10
    digits so 0.1 steps stay 0.3 and not 0.30000000000000004); "1,4:6:1" -> [1, 4, 5, 6]."""
    values: list[Any] = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            raise UserError(f"--{flag}: an empty value in {text!r}")
        if ":" in item and kind in (int, float):
            values += _range(item, kind, flag)
        else:
            values.append(_convert(item, kind, flag))
    return list(dict.fromkeys(values))


def _range(item: str, kind: type, flag: str) -> list[Any]:
    parts = item.split(":")
    if len(parts) != 3:
        raise UserError(f"--{flag}: a range is lo:hi:step, such as 0.2:0.6:0.1, got {item!r}")
    lo, hi, step = (_convert(p, kind, flag) for p in parts)
    if not step > 0:
        raise UserError(f"--{flag}: a range's step must be > 0, got {item!r}")
    if hi < lo:
        raise UserError(f"--{flag}: the range {item!r} is empty (it runs from {lo} up to {hi})")
    count = math.floor((hi - lo) / step + 1e-9) + 1
    if count > MAX_RUNS:
        raise UserError(f"--{flag}: the range {item!r} has {count:,} values; at most {MAX_RUNS:,}")
    return [lo + i * step if kind is int else round(lo + i * step, 10) for i in range(count)]


def _convert(text: str, kind: type, flag: str) -> Any:
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return kind(text)
    except ValueError:
        raise UserError(f"--{flag}: {text!r} is not {'an integer' if kind is int else 'a number' if kind is float else 'true or false' if kind is bool else 'valid'}") from None


def read_grid_file(path: Path, flags_by_key: dict[str, Any]) -> Grid:
    """A TOML grid: ``seeds`` and ``threshold`` at the top, ``[fixed]`` settings and ``[grid]`` axes, by config
    key (``[fixed] task = "modular"``, ``[grid] "modular.train_frac" = "0.2:0.6:0.1"`` or a list)."""
    from grokrun.results import flatten

    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot parse {path}: {e}") from None
    unknown = set(data) - {"seeds", "threshold", "fixed", "grid"}
    if unknown:
        raise UserError(f"{path}: unknown entry {sorted(unknown)[0]!r}; a grid file has seeds, threshold, [fixed] "
                        "and [grid]")
    fixed = {_key(k): v for k, v in flatten(data.get("fixed", {})).items()}
    axes = []
    for key, values in flatten(data.get("grid", {})).items():
        key = _key(key)
        flag = flags_by_key.get(key)
        if flag is None:
            raise UserError(f"{path}: unknown setting {key!r} in [grid]")
        if isinstance(values, list):
            if not values:
                raise UserError(f"{path}: [grid] {key} is an empty list")
            parsed = [v for item in values for v in (parse_values(item, flag.type, flag.name)
                                                      if isinstance(item, str) and flag.type is not str else [item])]
        else:
            parsed = parse_values(values, flag.type, flag.name)
        axes.append(Axis(key, flag.name, list(dict.fromkeys(parsed))))
    seeds = parse_seeds(str(data.get("seeds", "0")))
    threshold = data.get("threshold", 0.99)
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise UserError(f"{path}: threshold must be in (0, 1], got {threshold!r}")
    return Grid(fixed, axes, seeds, float(threshold))


def _key(key: str) -> str:
    """A task option as the command line keys it ("modular.p" -> "*.p"), so that a flag replaces it."""
    from grokrun.config import TASK_SECTIONS

    section, _, name = key.partition(".")
    return f"*.{name}" if section in TASK_SECTIONS and name else key


def configs(grid: Grid) -> list[tuple[str, str, Any]]:
    """(point name, run directory name, config) of every run, each checked: UserError, naming the point, on the
    first a setting refuses; nothing is trained or written before all are checked."""
    points = grid.points()
    if len(points) * len(grid.seeds) > MAX_RUNS:
        raise UserError(f"the grid has {len(points) * len(grid.seeds):,} runs; at most {MAX_RUNS:,}")
    runs = []
    for point in points:
        name = grid.point_name(point)
        try:
            cfg = resolve(None, {**grid.fixed, **point})
        except UserError as e:
            raise UserError(f"{name.replace('_', ' ')}: {e}") from None
        for seed in grid.seeds:
            runs.append((name, f"{name}-seed{seed}", _with_seed(cfg, seed)))
    tasks = {cfg.task for _, _, cfg in runs}
    if len(tasks) > 1:
        raise UserError(f"a sweep trains one task; the grid names {', '.join(sorted(tasks))}")
    return runs


def _with_seed(cfg, seed: int):
    import dataclasses

    return dataclasses.replace(cfg, seed=seed)


# --- the folder ----------------------------------------------------------------------------------------------

def _manifest(grid: Grid, task: str) -> dict[str, Any]:
    return {"task": task, "fixed": grid.fixed, "axes": [a.as_dict() for a in grid.axes]}


def output_folder(out: Path | None, grid: Grid, task: str, root: Path = Path("results")) -> tuple[Path, bool]:
    """``--out``, or the newest results/sweep-<task>-* of the same grid (so the same command continues it), or a
    new results/sweep-<task>-<time>. Returns (folder, whether it was found)."""
    if out is not None:
        return out, False
    wanted = _manifest(grid, task)
    for folder in sorted(root.glob(f"sweep-{task}-*"), reverse=True):
        try:
            stored = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if {k: stored.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
            return folder, True
    base = root / f"sweep-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, i = base, 2
    while folder.exists():
        folder, i = base.with_name(f"{base.name}-{i}"), i + 1
    return folder, False


def write_manifest(folder: Path, grid: Grid, task: str) -> None:
    make_folder(folder)
    try:
        known = json.loads((folder / MANIFEST).read_text()).get("seeds", [])
    except (OSError, ValueError, AttributeError):
        known = []
    write_json_atomic(folder / MANIFEST, {**_manifest(grid, task), "seeds": list(dict.fromkeys([*known, *grid.seeds])),
                                          "threshold": grid.threshold})


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("axes"), list) else None
    except (OSError, ValueError):
        return None


# --- running -------------------------------------------------------------------------------------------------

@dataclass
class Backend:
    """Where the runs train: "local" (this process, or ``jobs`` worker processes) or "ray" (Ray tasks at
    ``address``, or a local Ray instance, each with ``cpus`` CPUs and ``gpus`` GPUs)."""
    name: str = "local"
    jobs: int = 1
    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0


BACKENDS = ("local", "ray")


def sweep(grid: Grid, backend: Backend, out: Path | None, fmt: str, quiet: bool, console, batch: bool = True) -> bool:
    """Train what the folder lacks, a line per run as it ends; then write sweep.csv, the figures and report.html.
    Returns False if the user interrupted (the same command continues)."""
    from grokrun.table import count, headline

    if backend.name not in BACKENDS:
        raise UserError(f"unknown backend {backend.name!r}; choose one of: {', '.join(BACKENDS)}")
    if backend.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {backend.jobs}")
    if backend.name == "local" and (backend.address is not None or backend.gpus):
        raise UserError("--address and --gpus-per-run are for --backend ray")
    runs = configs(grid)
    if out is not None:
        check_folder(out)
    task = runs[0][2].task
    folder, continued = output_folder(out, grid, task)
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
        console.print(escape(f"[{done[0]}/{len(planned)}] {job.variant.replace('_', ' ')} seed {job.seed}: "
                             f"{headline(read_run(job.path), grid.threshold)}"))

    try:
        if backend.name == "ray":
            from grokrun.distributed import run_on_ray

            finished = run_on_ray(planned, backend.address, backend.cpus, backend.gpus, batch, console, report)
        else:
            finished = run_jobs(planned, backend.jobs, quiet, console, report, batch)
    except KeyboardInterrupt:
        finished = False
    written = write_outputs(folder, fmt)
    if written:
        console.print(escape(f"wrote {', '.join(str(p) for p in written)}"))
    if not finished:
        console.print("[yellow]interrupted[/yellow]: " + escape(f"the same command continues the sweep in {folder}"))
    return finished


# --- results -------------------------------------------------------------------------------------------------

def rows(folder: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run directory of the sweep: its swept values, seed, status, and the numbers of sweep.csv."""
    threshold = manifest.get("threshold", 0.99)
    thresholds = sorted({*THRESHOLDS, threshold})
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and is_run_dir(p)):
        try:
            run = read_run(path)
        except (OSError, ValueError):
            continue
        cfg = run.config
        values = {a["name"]: _lookup(cfg, a["key"]) for a in manifest["axes"]}
        summary = run.summary or {}
        metrics = run.metrics
        last = metrics[-1] if metrics else {}
        row = {**values, "seed": cfg.get("seed"), "status": summary.get("status", "incomplete"),
               "steps": summary.get("steps", last.get("step")),
               "max_steps": cfg.get("train", {}).get("max_steps"), "wall_s": summary.get("wall_s", last.get("wall_s"))}
        for t in thresholds:
            val, train = first_at(metrics, "val_acc", t), first_at(metrics, "train_acc", t)
            row[f"steps_to_val_{t:g}"] = val["step"] if val else None
            row[f"wall_s_to_val_{t:g}"] = val["wall_s"] if val else None
            row[f"steps_to_train_{t:g}"] = train["step"] if train else None
            row[f"delay_{t:g}"] = val["step"] - train["step"] if val and train else None
            row[f"delay_ratio_{t:g}"] = val["step"] / train["step"] if val and train and train["step"] else None
        accs = [r["val_acc"] for r in metrics if r.get("val_acc") is not None]
        losses = [r["val_loss"] for r in metrics if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
        row.update(best_val_acc=max(accs, default=None), min_val_loss=min(losses, default=None), run_dir=path.name)
        out.append(row)
    return out


def _lookup(config: dict[str, Any], key: str) -> Any:
    section, _, name = key.rpartition(".")
    if section == "*":
        section = config.get("task", "")
    return (config.get(section, {}) if section else config).get(name)


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    columns = list(dict.fromkeys(k for row in table for k in row))
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


@dataclass
class Cell:
    """One point of the grid over its seeds: the median steps to the threshold (``lo`` == ``hi`` when known;
    hi = inf when runs that did not get there make it only a lower bound), its min–max over the seeds that
    did, and how many did."""
    lo: float
    hi: float
    reached: int
    seeds: int
    low: float | None
    high: float | None
    best_val_acc: float | None


def cells(table: list[dict[str, Any]], axes: list[dict[str, Any]], threshold: float) -> dict[tuple, Cell]:
    """Per point (its values in axis order), the median steps to ``threshold`` over its seeds. A run that did
    not reach it counts as more than the steps it ran (a diverged one as never): the median is computed with
    those at their bound and at infinity, as the comparison table does."""
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for row in table:
        grouped.setdefault(tuple(row[a["name"]] for a in axes), []).append(row)
    out = {}
    for point, runs in grouped.items():
        reached = [r[f"steps_to_val_{threshold:g}"] for r in runs if r[f"steps_to_val_{threshold:g}"] is not None]
        lows = [r[f"steps_to_val_{threshold:g}"] if r[f"steps_to_val_{threshold:g}"] is not None else
                math.inf if r["status"] == "diverged" else (r["steps"] or 0) for r in runs]
        highs = [r[f"steps_to_val_{threshold:g}"] if r[f"steps_to_val_{threshold:g}"] is not None else math.inf
                 for r in runs]
        accs = [r["best_val_acc"] for r in runs if r["best_val_acc"] is not None]
        out[point] = Cell(statistics.median(lows), statistics.median(highs), len(reached), len(runs),
                          min(reached, default=None), max(reached, default=None),
                          statistics.median(accs) if accs else None)
    return out


def write_outputs(folder: Path, fmt: str = "png") -> list[Path]:
    """sweep.csv, the figures and report.html of a sweep folder, from its run directories. Nothing if it holds
    no run yet."""
    from grokrun.plot import plot_sweep

    manifest = read_manifest(folder)
    if manifest is None:
        return []
    table = rows(folder, manifest)
    if not table:
        return []
    try:
        write_csv(folder / TABLE, table)
        figures = plot_sweep(folder, manifest, table, cells(table, manifest["axes"], manifest.get("threshold", 0.99)),
                             fmt)
        write_report(folder, manifest, table, figures)
    except OSError as e:
        raise UserError(f"cannot write the sweep's results into {folder}: {e.strerror or e}") from None
    return [folder / TABLE, *figures, folder / REPORT]


def write_report(folder: Path, manifest: dict[str, Any], table: list[dict[str, Any]], figures: list[Path]) -> None:
    """report.html: what was swept, every figure (PNG or SVG inlined) and the table, in one self-contained page."""
    threshold = manifest.get("threshold", 0.99)
    names = [a["name"] for a in manifest["axes"]]
    columns = [*names, "seed", "status", "steps", f"steps_to_val_{threshold:g}", f"steps_to_train_{threshold:g}",
               f"delay_{threshold:g}", "best_val_acc", "min_val_loss", "run_dir"]
    head = "".join(f"<th>{html_escape(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(f"<td>{html_escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
                     for r in table)
    images = []
    for figure in figures:
        if figure.suffix == ".svg":
            images.append(figure.read_text())
        elif figure.suffix == ".png":
            data = base64.b64encode(figure.read_bytes()).decode()
            images.append(f'<img src="data:image/png;base64,{data}" alt="{html_escape(figure.name)}">')
    swept = "; ".join(f"{a['name']} = {', '.join(map(_text, a['values']))}" for a in manifest["axes"])
    fixed = ", ".join(f"{k} = {_text(v)}" for k, v in manifest.get("fixed", {}).items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>grokrun sweep: {html_escape(folder.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} img,svg{{max-width:100%;height:auto}}</style></head>
<body><h1>{html_escape(folder.name)}</h1>
<p>Task {html_escape(str(manifest.get("task")))}; swept: {html_escape(swept)}; fixed: {html_escape(fixed or "nothing")};
seeds {html_escape(", ".join(map(str, manifest.get("seeds", []))))}; threshold {threshold:g} validation accuracy.
Steps to the threshold are the first evaluated step at or above it; the delay is that minus the training set's.</p>
{"".join(images)}
<table><tr>{head}</tr>
{body}
</table></body></html>
"""
    write_text_atomic(folder / REPORT, page)


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)

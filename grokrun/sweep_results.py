"""A sweep's results, read from its folder only: sweep.csv (one row per run), the figures and report.html.

    written = write_outputs(folder, "png")
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grokrun.errors import UserError
from grokrun.grid import value_text
from grokrun.report import (REPORT, Page, flag_words, point_colors, ran_on, run_columns, run_row,
                            write_report as write_page)
from grokrun.results import SWEEP_MANIFEST as MANIFEST, THRESHOLDS, write_text_atomic
from grokrun.runs import Run, is_run_dir, read_run

TABLE = "sweep.csv"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("axes"), list) else None
    except (OSError, ValueError):
        return None


def rows(folder: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run directory of the sweep: its swept values, seed, status, and the numbers of sweep.csv."""
    return [row for row, _ in _read(folder, manifest)]


def _read(folder: Path, manifest: dict[str, Any]) -> list[tuple[dict[str, Any], Run]]:
    """Each readable run directory of the sweep, read once: its row and the run."""
    threshold = manifest.get("threshold", 0.99)
    thresholds = sorted({*THRESHOLDS, threshold})
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and is_run_dir(p)):
        try:
            run = read_run(path)
        except (OSError, ValueError):
            continue
        values = {a["name"]: _lookup(run.config, a["key"]) for a in manifest["axes"]}
        out.append(({**values, **run_row(run, thresholds), "ran_on": ran_on(run.summary)}, run))
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
    from grokrun.plot_sweep import plot_sweep

    manifest = read_manifest(folder)
    if manifest is None:
        return []
    read = _read(folder, manifest)
    if not read:
        return []
    table = [row for row, _ in read]
    try:
        write_csv(folder / TABLE, table)
        figures = plot_sweep(folder, manifest, table, cells(table, manifest["axes"], manifest.get("threshold", 0.99)),
                             fmt)
        write_report(folder, manifest, read, figures)
    except OSError as e:
        raise UserError(f"cannot write the sweep's results into {folder}: {e.strerror or e}") from None
    return [folder / TABLE, *figures, folder / REPORT]


def write_report(folder: Path, manifest: dict[str, Any], read: list[tuple[dict[str, Any], Run]],
                 figures: list[Path]) -> None:
    """report.html (grokrun.report): the command as its title, what was swept in words, every figure, the curves
    of every point and the table, each run linked to its own figures."""
    from grokrun.plot import describe_task

    threshold = manifest.get("threshold", 0.99)
    axes = manifest["axes"]
    names = [a["name"] for a in axes]
    table = [row for row, _ in read]
    settings = [("task", describe_task(read[0][1]))]
    task = str(manifest.get("task"))
    for a in axes:
        flag, help = flag_words(a["key"], task)
        settings.append((flag, f"{'swept' if len(a['values']) > 1 else 'set to'}: "
                               f"{', '.join(map(value_text, a['values']))}. {help}"))
    for key, value in manifest.get("fixed", {}).items():
        if key == "task":
            continue
        flag, help = flag_words(key, task)
        settings.append((flag, f"set to {value_text(value)}. {help}"))
    settings.append(("seeds", ", ".join(map(str, manifest.get("seeds", [])))))
    points: dict[tuple, list] = {}
    for row, run in read:
        points.setdefault(tuple(row[n] for n in names), []).append(run)
    swept = [i for i, a in enumerate(axes) if len(a["values"]) > 1]
    labels = [", ".join(f"{names[i]}={value_text(p[i])}" for i in swept) or "the point" for p in points]
    colors = point_colors([p[swept[0]] for p in points] if len(swept) == 1 else labels)
    notes = (f"Threshold {threshold:g} validation accuracy. Steps to the threshold are the first evaluated step at or "
             "above it; the delay is that minus the training set's; a median whose seed did not get there within "
             "its budget is a lower bound (open markers in the steps figure).")
    page = Page("sweep", manifest.get("commands", []), folder.name, settings, notes, figures,
                list(zip(labels, points.values())), colors, [*names, *run_columns(threshold)], table,
                threshold=threshold)
    write_page(folder, page)

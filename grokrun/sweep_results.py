"""A sweep's results, read from its folder only: sweep.csv (one row per run), the figures and report.html.

    written = write_outputs(folder, "png")
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import Any

from grokrun.errors import UserError
from grokrun.grid import value_text
from grokrun.results import SWEEP_MANIFEST as MANIFEST, THRESHOLDS, first_at, write_text_atomic
from grokrun.runs import is_run_dir, read_run

TABLE = "sweep.csv"
REPORT = "report.html"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("axes"), list) else None
    except (OSError, ValueError):
        return None


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
    from grokrun.plot_sweep import plot_sweep

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
    swept = "; ".join(f"{a['name']} = {', '.join(map(value_text, a['values']))}" for a in manifest["axes"])
    fixed = ", ".join(f"{k} = {value_text(v)}" for k, v in manifest.get("fixed", {}).items())
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

"""report.html, the page a researcher opens for a sweep or a comparison folder: the command that made it as its
title, the settings in words, the folder's figures, the validation curves of every point or variant (the
training curves on demand), and a table of the runs, each row linking to that run's own figures. One
self-contained file: every figure inlined, no script, nothing fetched.

    write_report(folder, Page(kind="sweep", command=..., settings=[...], groups=[(label, runs)], ...))
"""

from __future__ import annotations

import base64
import io
import os
import shlex
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from grokrun.results import METRICS, write_text_atomic
from grokrun.runs import Run

REPORT = "report.html"
RUN_FIGURES = ("accuracy", "loss", "weight_norm")  # grokrun.plot.plot_run's files, in a run directory


_typed: list[str | None] = [None]


def set_command(argv: list[str]) -> None:
    """Remember the command line this process runs (grokrun.cli, as it parses it), for the folders' titles."""
    _typed[0] = shlex.join(["grokrun", *argv])


def typed_command() -> str | None:
    """The command as the user typed it, "grokrun sweep --task modular --op add,div"; None outside the CLI."""
    return _typed[0]


def with_command(known: list[str]) -> list[str]:
    """A folder's list of the commands that made it, with this process's added where it is new."""
    now = typed_command()
    return [*known, now] if now and now not in known else list(known)


def run_row(run: Run, thresholds: list[float], folder: Path | None = None) -> dict[str, Any]:
    """A run's numbers for the tables: status, steps, budget, time, and at each threshold the steps and seconds
    to it on validation, the steps to it on the training set and the grokking delay; best accuracy, least loss;
    ``run_dir``, its name (its path from ``folder``, the page's, where it lies elsewhere)."""
    import math

    from grokrun.results import first_at

    cfg, summary, metrics = run.config, run.summary or {}, run.metrics
    last = metrics[-1] if metrics else {}
    row = {"seed": cfg.get("seed"), "status": summary.get("status", "incomplete"),
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
    where = run.path.name if folder is None else os.path.relpath(run.path, folder)
    row.update(best_val_acc=max(accs, default=None), min_val_loss=min(losses, default=None), run_dir=where)
    return row


def ran_on(summary: dict[str, Any] | None) -> str | None:
    """Where a run trained, from its summary: "host:local", or "host:<Ray node id, 8 digits>", each resume after
    the first as ", host:node from STEP"; None for runs older than the record."""
    places = (summary or {}).get("ran_on")
    if not places:
        return None
    return ", ".join(f"{p['host']}:{p['node'] if p['node'] == 'local' else p['node'][:8]}"
                     + (f" from {p['from_step']}" if k else "") for k, p in enumerate(places))


def run_columns(threshold: float) -> list[str]:
    """The runs' table's columns after the point's or variant's own."""
    return ["seed", "status", "steps", f"steps_to_val_{threshold:g}", f"steps_to_train_{threshold:g}",
            f"delay_{threshold:g}", "best_val_acc", "min_val_loss", "run_dir"]


def flag_words(key: str, task: str) -> tuple[str, str]:
    """A setting's flag and its help for ``task`` ("--train-frac", "Fraction of the table used for training, in
    (0, 1)."), by its config key ("*.train_frac", "modular.train_frac", "filter.name")."""
    from grokrun.config import section_docs, task_sections
    from grokrun.flags import flags

    by_key = {f.key: f for f in flags()}
    section, _, name = key.rpartition(".")
    flag = by_key.get(key) or by_key.get(f"*.{name}")
    if flag is None:
        return key, ""
    if flag.key.startswith("*.") and task in task_sections():  # the task's own words, not every task's
        return f"--{flag.name}", section_docs(task).get(name, flag.help)
    return f"--{flag.name}", flag.help


@dataclass
class Page:
    kind: str  # "sweep" or "comparison"
    commands: list[str]  # the commands that made the folder, the latest last ([] for folders made before)
    folder_name: str
    settings: list[tuple[str, str]]  # (setting, what it is and the values it took), in words
    notes: str  # one paragraph of how to read the numbers
    figures: list[Path]  # the folder's own figures (PNG or SVG), inlined
    groups: list[tuple[str, list[Run]]]  # a curve per point or variant: the median over its seeds
    colors: list[Any]  # one matplotlib colour per group
    columns: list[str]  # the runs' table (each row a dict; its "run_dir" is linked to the run's figures)
    rows: list[dict[str, Any]]
    summary: tuple[list[str], list[list[str]]] | None = None  # a comparison's table: headers, cells
    threshold: float = 0.95


def write_report(folder: Path, page: Page) -> Path:
    """Write ``folder/report.html`` (and any run figure that is missing or older than its metrics)."""
    title = page.commands[-1] if page.commands else f"grokrun {page.kind}: {page.folder_name}"
    earlier = "".join(f"<li><code>{escape(c)}</code></li>" for c in page.commands[:-1])
    settings = "".join(f"<dt>{escape(name)}</dt><dd>{escape(text)}</dd>" for name, text in page.settings)
    val = curves_figure(page.groups, page.colors, "val_acc", page.threshold)
    train = curves_figure(page.groups, page.colors, "train_acc", page.threshold)
    parts = [f"<h1><code>{escape(title)}</code></h1>",
             f"<p class=folder>{escape(page.kind)} folder <code>{escape(page.folder_name)}</code></p>"]
    if earlier:
        parts.append(f"<p>Runs added earlier by:</p><ul>{earlier}</ul>")
    parts.append(f"<h2>Settings</h2><dl>{settings}</dl><p>{escape(page.notes)}</p>")
    if page.summary is not None:
        parts += ["<h2>Summary</h2>", _table(*page.summary)]
    parts += ["<h2>Figures</h2>", *(inline_figure(f) for f in page.figures if f.is_file())]
    if val:
        parts += ["<h2>Validation accuracy of every " + ("point" if page.kind == "sweep" else "variant") + "</h2>",
                  f"<figure id=curves-val>{val}<figcaption>Median over each one's seeds (band: min–max); dotted: "
                  f"{page.threshold:g}.</figcaption></figure>"]
    if train:
        parts.append(f"<details id=curves-train><summary>Training accuracy (show)</summary>{train}</details>")
    runs = {os.path.relpath(run.path, folder): run for _, group in page.groups for run in group}
    parts += ["<h2>Runs</h2>", _runs_table(page.columns, page.rows, runs)]
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} h1{{font-size:1.1em}} code{{font-size:95%}}
table{{border-collapse:collapse;font-size:13px;margin:1em 0}} td,th{{border:1px solid #ccc;padding:2px 6px}}
td{{text-align:right}} td:first-child{{text-align:left}} dt{{font-weight:bold}} dd{{margin:0 0 .4em 1.5em}}
img,svg{{max-width:100%;height:auto}} .folder{{color:#555}} details summary{{cursor:pointer;margin:1em 0}}</style>
</head><body>
{chr(10).join(parts)}
</body></html>
"""
    write_text_atomic(folder / REPORT, html)
    return folder / REPORT


def _table(headers: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>\n" for row in cells)
    return f"<table><tr>{head}</tr>\n{body}</table>"


def _runs_table(columns: list[str], rows: list[dict[str, Any]], runs: dict[str, Run]) -> str:
    """A row per run; ``runs``: the runs by their rows' run_dir (their path from the page's folder)."""
    body = []
    for row in rows:
        cells = "".join(f"<td>{escape(_text(row.get(c)))}</td>" for c in columns if c != "run_dir")
        name = str(row["run_dir"])
        links = " ".join(f'<a href="{escape(_href(name, f.name))}">{escape(f.stem.replace("_", " "))}</a>'
                         for f in run_figures(runs[name]))
        body.append(f'<tr id="{escape(name)}">{cells}<td><a href="{escape(_href(name, ""))}">{escape(name)}</a>'
                    f"</td><td>{links or '—'}</td></tr>")
    head = "".join(f"<th>{escape(c)}</th>" for c in [*(c for c in columns if c != "run_dir"), "run", "figures"])
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def _href(run: str, file: str) -> str:
    from urllib.parse import quote

    return quote(f"{run}/{file}")


def run_figures(run: Run) -> list[Path]:
    """The run's own figures (grokrun plot's), drawn again where missing or older than its metrics."""
    from grokrun.plot import drawable, plot_run

    path = run.path
    found = [path / f"{name}.png" for name in RUN_FIGURES if (path / f"{name}.png").is_file()]
    try:
        stale = not found or any(os.path.getmtime(f) < os.path.getmtime(path / METRICS) for f in found)
        if stale:
            found = [f for f in plot_run(run, "png") if f.suffix == ".png"] if drawable(run) else []
    except (OSError, ValueError):  # (a run that cannot be read or drawn: its row stays, without figures)
        return []
    return found


def _text(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def inline_figure(figure: Path) -> str:
    """A figure file as HTML that carries it (SVG as is, PNG as a data URL), captioned by its name."""
    if figure.suffix == ".svg":
        return f"<figure>{figure.read_text()}<figcaption>{escape(figure.name)}</figcaption></figure>"
    if figure.suffix != ".png":  # (a PDF: a browser shows it on its own, beside the page)
        return f'<p><a href="{escape(figure.name)}">{escape(figure.name)}</a></p>'
    data = base64.b64encode(figure.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(figure.name)}">'
            f"<figcaption>{escape(figure.name)}</figcaption></figure>")


def curves_figure(groups: list[tuple[str, list[Run]]], colors: list[Any], column: str, threshold: float) -> str:
    """An inlined PNG of ``column`` against steps (log), one line per group (the median over its seeds, the
    min–max as a band); "" when no run has that column to draw."""
    from matplotlib.figure import Figure

    from grokrun.plot import _axes, band

    drawn = [(label, color, band(runs, column)) for (label, runs), color in zip(groups, colors)]
    drawn = [(label, color, b) for label, color, b in drawn if b is not None]
    if not drawn:
        return ""
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for label, color, (x, med, lo, hi) in drawn:
        ax.fill_between(x, lo, hi, color=color, alpha=0.12, linewidth=0)
        ax.plot(x, med, color=color, label=label)
    _axes(ax, "acc", [med for _, _, (_, med, _, _) in drawn])
    ax.axhline(threshold, color="gray", linestyle=":")
    ax.set_ylabel(column.replace("_acc", " accuracy").replace("val", "validation"))
    ax.legend(fontsize=7, ncols=1 if len(drawn) <= 12 else 2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{escape(column)} curves">'


def point_colors(values: list[Any]) -> list[Any]:
    """Colours for points by one swept value: a colour scale when the values are numbers (log where they span
    a factor of 10 or more), distinct colours otherwise."""
    import math

    from matplotlib import colormaps

    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numbers and len(set(values)) > 1:
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo >= 10
        scale = [(math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else (v - lo) / (hi - lo)
                 for v in values]
        return [colormaps["viridis"](0.9 * s) for s in scale]
    distinct = sorted(set(map(str, values)), key=[str(v) for v in values].index)
    cmap = colormaps["tab10" if len(distinct) <= 10 else "tab20"]
    return [cmap(distinct.index(str(v)) % cmap.N) for v in values]

"""Figures from run directories only: per-run curves and an overlay of variants over seeds.

    grokrun plot results/

Per run: ``accuracy.<fmt>`` and ``loss.<fmt>`` in its directory (steps on a log axis, loss on a log axis,
train and validation), and ``weight_norm.<fmt>`` where metrics.csv has that column. For the runs found
together: ``comparison.<fmt>`` with each variant's median curve and its min–max band across seeds. In a sweep's
folder (``sweep.json``), the sweep's figures instead (``plot_sweep``). Matplotlib's Figure API draws without a
display (Agg).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation

from grokrun.filters import describe_variant
from grokrun.results import FINISHED, SWEEP_MANIFEST
from grokrun.runs import Run, group_variants, load_runs
from grokrun.tasks import TASKS, task

FORMATS = ("png", "svg", "pdf")

_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")
_POWER = re.compile(r"\$\\mathdefault\{(?:(?P<sign>-?)(?:(?P<coef>[\d.]+)\\times)?(?P<base>\d+)\^\{(?P<exp>-?\d+)\}"
                    r"|(?P<plain>[^\\^{}$]*))\}\$")


class PowerLabels(LogFormatterSciNotation):
    """Matplotlib's log-axis labels (10⁻³, 2×10¹) as plain text with superscript digits instead of mathtext:
    the same labels, drawn without a TeX parser (a new parser per figure: a fifth of a run figure's time)."""

    def __call__(self, x, pos=None):
        label = super().__call__(x, pos)
        m = _POWER.fullmatch(label)
        if m is None:  # (anything else, as matplotlib writes it)
            return label
        if m["plain"] is not None:  # (0 on a symlog axis)
            return m["plain"]
        coef = f"{m['coef']}\u00d7" if m["coef"] else ""
        sign = "\u2212" if m["sign"] else ""  # (the minus sign mathtext draws for "-")
        return f"{sign}{coef}{m['base']}{m['exp'].translate(_SUPERSCRIPT)}"


def power_labels(ax, which: str = "xy") -> None:
    """PowerLabels on the log (or symlog) axes among ``which`` of ``ax``; call after setting the scales."""
    for name in which:
        axis = getattr(ax, f"{name}axis")
        if axis.get_scale() in ("log", "symlog"):  # (matplotlib's defaults; a symlog axis leaves minor ones blank)
            axis.set_major_formatter(PowerLabels())
            if axis.get_scale() == "log":
                axis.set_minor_formatter(PowerLabels(labelOnlyBase=False))


def describe_task(run: Run) -> str:
    """What was learned, as the run described itself when it trained: "modular: x·y mod 97, 50% train".

    A run without that (unfinished, or made before runs saved it) is described from its config by its
    task's ``describe``, which needs no torch; a task this install does not know is named only.
    """
    title = (run.summary or {}).get("title") or {}
    if "task" in title:
        return title["task"]
    config = run.config
    name = config.get("task", "?")
    if name not in TASKS:
        return str(name)
    options = task(name).Options
    known = {f.name for f in dataclasses.fields(options)}
    return task(name).describe(options(**{k: v for k, v in config.get(name, {}).items() if k in known}))


def describe_filter(run: Run) -> str:
    """How it was trained: "EMA α=0.98 λ=2 · adam wd 0.005" (saved at train time, else from the config)."""
    title = (run.summary or {}).get("title") or {}
    return title.get("variant") or describe_variant(run.config)


def _series(run: Run, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of one metric, without step 0 (a log axis cannot show it), non-finite values blank;
    None if nothing is left to draw."""
    pts = [(r["step"], r.get(column)) for r in run.metrics if r["step"] > 0 and r.get(column) is not None]
    if not pts:
        return None
    steps, values = np.array(pts, dtype=float).T
    values[~np.isfinite(values)] = np.nan
    return (steps, values) if np.isfinite(values).any() else None


def drawable(run: Run) -> bool:
    """Whether the run has anything to draw: a finite evaluation after step 0."""
    return any(_series(run, c) is not None for c in ("val_acc", "val_loss", "train_loss", "weight_norm"))


def _finish(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path


def plot_run(run: Run, fmt: str = "png", threshold: float = 0.95) -> list[Path]:
    """accuracy.<fmt> (if the task has accuracy), loss.<fmt> and weight_norm.<fmt> (if logged) in the run directory."""
    cfg = run.config
    status = (run.summary or {}).get("status", "unfinished")
    title = f"{describe_task(run)}\n{describe_filter(run)} · seed {cfg.get('seed')}"
    if status not in FINISHED:
        title += f" · {status}"
    written = []
    for kind, file in (("acc", "accuracy"), ("loss", "loss"), ("weight_norm", "weight_norm")):
        columns = [("weight norm", "weight_norm")] if kind == "weight_norm" else \
            [(split, f"{split}_{kind}") for split in ("train", "val")]
        curves = [(label, s) for label, s in ((label, _series(run, c)) for label, c in columns) if s is not None]
        if not curves:
            continue
        fig = Figure(figsize=(6.4, 4.2))
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.88)  # (constrained layout: twice the time)
        ax = fig.add_subplot()
        for i, (label, (x, y)) in enumerate(curves):
            ax.plot(x, y, label=label, color=f"C{i}")
        _axes(ax, kind, [y for _, (_, y) in curves])
        if kind == "acc":
            ax.axhline(threshold, color="gray", linestyle=":", label=f"{threshold:g}")
        ax.legend()
        ax.set_title(title, fontsize=9)
        written.append(_finish(fig, run.path / f"{file}.{fmt}"))
    return written


def _axes(ax, kind: str, values: list[np.ndarray]) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("optimization steps")
    if kind == "acc":
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy")
    elif kind == "loss":
        if any((v[np.isfinite(v)] > 0).any() for v in values):  # a log axis needs a positive value to show
            ax.set_yscale("log")
        ax.set_ylabel("loss")
    else:
        ax.set_ylabel("L2 norm of all parameters")
    ax.grid(alpha=0.3, which="both")
    power_labels(ax)


def band(runs: list[Run], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Median, min and max across runs on the union of their steps (each run interpolated within its range)."""
    series = [s for s in (_series(r, column) for r in runs) if s is not None]
    if not series:
        return None
    grid = np.unique(np.concatenate([s[0] for s in series]))
    stacked = np.stack([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in series])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step no run covers is all-NaN: left blank
        return grid, np.nanmedian(stacked, 0), np.nanmin(stacked, 0), np.nanmax(stacked, 0)


def plot_overlay(variants: list[tuple[str, list[Run]]], path: Path, threshold: float = 0.95) -> Path | None:
    """One colour per variant: median curve over its seeds, min–max band; validation solid, train dashed.
    The legend, below the panels, says how many seeds each variant has and how many did not finish.
    None (and no file) when no run has anything to draw."""
    variants = [(name, [r for r in runs if drawable(r)]) for name, runs in variants]
    variants = [(name, runs) for name, runs in variants if runs]
    if not variants:
        return None
    firsts = [runs[0] for _, runs in variants]
    tasks = {describe_task(r) for r in firsts}

    def present(column: str) -> bool:
        return any(_series(r, column) is not None for _, runs in variants for r in runs)

    kinds = [k for k, column in (("acc", "val_acc"), ("loss", "val_loss"), ("weight_norm", "weight_norm"))
             if present(column)]
    fig = Figure(figsize=(5.6 * len(kinds), 4.6), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        drawn = []
        for i, (name, runs) in enumerate(variants):
            color = f"C{i % 10}"
            label = f"{name}: {describe_filter(runs[0])}"
            if len(tasks) > 1:
                label += f" ({describe_task(runs[0])})"
            label += f" · {len(runs)} seed{'s' * (len(runs) != 1)}"
            unfinished = {}
            for r in runs:
                status = (r.summary or {}).get("status", "unfinished")
                if status not in FINISHED:
                    unfinished[status] = unfinished.get(status, 0) + 1
            if unfinished:
                label += " (" + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in unfinished.items()) + ")"
            val = band(runs, "weight_norm" if kind == "weight_norm" else f"val_{kind}")
            if val is not None:
                x, med, lo, hi = val
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
                ax.plot(x, med, color=color, label=label if ax is axes[0] else None)
                drawn.append(med)
            train = None if kind == "weight_norm" else band(runs, f"train_{kind}")
            if train is not None:
                ax.plot(train[0], train[1], color=color, linestyle="--", linewidth=0.9, alpha=0.8)
                drawn.append(train[1])
        _axes(ax, kind, drawn)
        if kind == "acc":
            ax.axhline(threshold, color="gray", linestyle=":")
            ax.set_ylabel(f"accuracy (dotted: {threshold:g})")
        ax.set_title({"acc": "accuracy: validation (solid), train (dashed)",
                      "loss": "loss: validation (solid), train (dashed)",
                      "weight_norm": "weight norm"}[kind], fontsize=9)
    fig.legend(loc="outside lower center", fontsize=8, ncols=1 if len(variants) < 4 else 2, frameon=False)
    head = tasks.pop() if len(tasks) == 1 else firsts[0].config.get("task", "")
    fig.suptitle(f"{head} — median and min–max band over seeds", fontsize=10)
    return _finish(fig, path)


# --- sweeps ------------------------------------------------------------------------------------------------


@dataclass
class PlotReport:
    figures: list[Path] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    runs: int = 0
    warnings: list[str] = field(default_factory=list)


def plot_path(path: Path, fmt: str = "png", threshold: float = 0.95) -> PlotReport:
    """Figures for every run under ``path``, and an overlay per task where there are at least two runs.

    A run with nothing to draw, or a folder where figures cannot be written, is a warning, not a stop."""
    report = PlotReport()
    runs, report.warnings = load_runs([path])
    for run in runs:
        if not drawable(run):
            ended = (run.summary or {}).get("diverged_at")
            why = f" (it diverged at step {ended:,})" if isinstance(ended, int) else ""
            report.warnings.append(f"skipping {run.path}: no finite evaluation after step 0 to draw{why}")
    runs = [r for r in runs if drawable(r)]
    report.runs = len(runs)
    for run in runs:
        try:
            report.figures += plot_run(run, fmt, threshold)
        except OSError as e:
            report.warnings.append(f"cannot write figures in {run.path}: {e.strerror or e}")
    if (Path(path) / SWEEP_MANIFEST).is_file():  # a sweep: its own figures (grokrun.sweep), not an overlay of every point
        return report
    tasks = list(dict.fromkeys(r.config.get("task") for r in runs))
    for name in tasks:
        task_runs = [r for r in runs if r.config.get("task") == name]
        if len(task_runs) < 2 or Path(path) in [r.path for r in task_runs]:
            continue
        variants, repeats = group_variants(task_runs)
        report.warnings += repeats
        figure = Path(path) / f"{'comparison' if len(tasks) == 1 else f'comparison-{name}'}.{fmt}"
        try:
            report.overlays += [p for p in [plot_overlay(variants, figure, threshold)] if p is not None]
        except OSError as e:
            report.warnings.append(f"cannot write {figure}: {e.strerror or e}")
    return report


# --- inside a model (grokrun analyze) ----------------------------------------------------------------------



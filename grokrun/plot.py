"""Figures from run directories only: per-run curves and an overlay of variants over seeds.

    grokrun plot results/

Per run: ``accuracy.<fmt>`` and ``loss.<fmt>`` in its directory (steps on a log axis, loss on a log axis,
train and validation), and ``weight_norm.<fmt>`` where metrics.csv has that column. For the runs found
together: ``comparison.<fmt>`` with each variant's median curve and its min–max band across seeds. Matplotlib's Figure API draws without a display (Agg).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from grokrun.results import FINISHED, Run, group_variants, load_runs

FORMATS = ("png", "svg", "pdf")

_OP_TEXT = {"mul": "x·y", "add": "x+y", "sub": "x−y", "div": "x/y", "s5": "x∘y in S5",
            "s5conj": "x∘y∘x⁻¹ in S5", "s5aba": "x∘y∘x in S5"}


def describe_task(config: dict[str, Any]) -> str:
    """What was learned: "modular: x·y mod 97, 50% train"."""
    task = config.get("task", "?")
    section = config.get(task, {})
    if task == "modular":
        op = section.get("op", "?")
        text = _OP_TEXT.get(op) or re.sub(r"([xy])([23])", lambda m: m[1] + "²³"[int(m[2]) - 2], op)
        if not op.startswith("s5"):
            text += f" mod {section.get('p')}"
        return f"modular: {text}, {section.get('train_frac', 0):.0%} train"
    if task == "mnist":
        return (f"mnist: {section.get('train_points', 0):,} train images, MLP {section.get('depth')}×"
                f"{section.get('width')} {section.get('activation')}, init ×{section.get('init_scale', 0):g}, "
                f"{section.get('loss')}")
    if task == "imdb":
        source = Path(section["data_file"]).name if section.get("data_file") else "aclImdb"
        return (f"imdb: {section.get('size', 0):,} reviews ({source}), LSTM {section.get('layers')}×"
                f"{section.get('width')}, init ×{section.get('init_scale', 0):g}")
    if task == "qm9":
        names = {0: "dipole moment", 1: "polarizability α", 2: "HOMO", 3: "LUMO", 4: "gap"}
        target = section.get("target", 1)
        return (f"qm9: {section.get('size', 0):,} molecules, {names.get(target, f'target {target}')}, "
                f"init ×{section.get('init_scale', 0):g}")
    return task


def describe_filter(config: dict[str, Any]) -> str:
    """How it was trained: "EMA α=0.98 λ=2 · wd 0.005"."""
    f, o = config.get("filter", {}), config.get("optim", {})
    name = f.get("name", "none")
    if name == "ema":
        text = f"EMA α={f['alpha']:g} λ={f['lamb']:g}"
    elif name == "ma":
        text = f"MA window {f['window_size']} λ={f['lamb']:g}" + (" (sum)" if f.get("filter_type") == "sum" else "")
    else:
        text = "no filter"
    if name != "none" and f.get("start"):
        text += f" from step {f['start']:,}"
    return f"{text} · {o.get('name', '?')} wd {o.get('weight_decay', 0):g}"


def _series(run: Run, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of one metric, without step 0 (a log axis cannot show it); None if the column is empty."""
    pts = [(r["step"], r.get(column)) for r in run.metrics if r["step"] > 0 and r.get(column) is not None]
    if not pts:
        return None
    steps, values = np.array(pts, dtype=float).T
    values[~np.isfinite(values)] = np.nan
    return steps, values


def _finish(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path


def plot_run(run: Run, fmt: str = "png", threshold: float = 0.95) -> list[Path]:
    """accuracy.<fmt> (if the task has accuracy), loss.<fmt> and weight_norm.<fmt> (if logged) in the run directory."""
    cfg = run.config
    status = (run.summary or {}).get("status", "unfinished")
    title = f"{describe_task(cfg)}\n{describe_filter(cfg)} · seed {cfg.get('seed')}"
    if status not in FINISHED:
        title += f" · {status}"
    written = []
    for kind, file in (("acc", "accuracy"), ("loss", "loss"), ("weight_norm", "weight_norm")):
        columns = [("weight norm", "weight_norm")] if kind == "weight_norm" else \
            [(split, f"{split}_{kind}") for split in ("train", "val")]
        curves = [(label, s) for label, s in ((label, _series(run, c)) for label, c in columns) if s is not None]
        if not curves:
            continue
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        for i, (label, (x, y)) in enumerate(curves):
            ax.plot(x, y, label=label, color=f"C{i}")
        _axes(ax, kind, threshold)
        if kind == "acc":
            ax.axhline(threshold, color="gray", linestyle=":", label=f"{threshold:g}")
        ax.legend()
        ax.set_title(title, fontsize=9)
        written.append(_finish(fig, run.path / f"{file}.{fmt}"))
    return written


def _axes(ax, kind: str, threshold: float) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("optimization steps")
    if kind == "acc":
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy")
    elif kind == "loss":
        ax.set_yscale("log")
        ax.set_ylabel("loss")
    else:
        ax.set_ylabel("L2 norm of all parameters")
    ax.grid(alpha=0.3, which="both")


def _band(runs: list[Run], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Median, min and max across runs on the union of their steps (each run interpolated within its range)."""
    series = [s for s in (_series(r, column) for r in runs) if s is not None]
    if not series:
        return None
    grid = np.unique(np.concatenate([s[0] for s in series]))
    stacked = np.stack([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in series])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step no run covers is all-NaN: left blank
        return grid, np.nanmedian(stacked, 0), np.nanmin(stacked, 0), np.nanmax(stacked, 0)


def plot_overlay(variants: list[tuple[str, list[Run]]], path: Path, threshold: float = 0.95) -> Path:
    """One colour per variant: median curve over its seeds, min–max band; validation solid, train dashed."""
    configs = [runs[0].config for _, runs in variants]
    tasks = {describe_task(c) for c in configs}

    def present(column: str) -> bool:
        return any(_series(r, column) is not None for _, runs in variants for r in runs)

    kinds = [k for k, column in (("acc", "val_acc"), ("loss", "val_loss"), ("weight_norm", "weight_norm"))
             if present(column)]
    fig = Figure(figsize=(5.6 * len(kinds), 4.6), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        for i, (name, runs) in enumerate(variants):
            color = f"C{i % 10}"
            label = f"{name}: {describe_filter(runs[0].config)}"
            if len(tasks) > 1:
                label += f" ({describe_task(runs[0].config)})"
            val = _band(runs, "weight_norm" if kind == "weight_norm" else f"val_{kind}")
            if val is not None:
                x, med, lo, hi = val
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
                ax.plot(x, med, color=color, label=f"{label} · {len(runs)} seed{'s' * (len(runs) != 1)}")
            train = None if kind == "weight_norm" else _band(runs, f"train_{kind}")
            if train is not None:
                ax.plot(train[0], train[1], color=color, linestyle="--", linewidth=0.9, alpha=0.8)
        _axes(ax, kind, threshold)
        if kind == "acc":
            ax.axhline(threshold, color="gray", linestyle=":")
            ax.set_ylabel(f"accuracy (dotted: {threshold:g})")
        ax.set_title({"acc": "accuracy: validation (solid), train (dashed)",
                      "loss": "loss: validation (solid), train (dashed)",
                      "weight_norm": "weight norm"}[kind], fontsize=9)
    axes[0].legend(fontsize=8)
    head = tasks.pop() if len(tasks) == 1 else configs[0].get("task", "")
    fig.suptitle(f"{head} — median and min–max band over seeds", fontsize=10)
    return _finish(fig, path)


@dataclass
class PlotReport:
    figures: list[Path] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    runs: int = 0
    warnings: list[str] = field(default_factory=list)


def plot_path(path: Path, fmt: str = "png", threshold: float = 0.95) -> PlotReport:
    """Figures for every run under ``path``, and an overlay per task where there are at least two runs."""
    report = PlotReport()
    runs, report.warnings = load_runs([path])
    for run in [r for r in runs if not r.metrics]:
        report.warnings.append(f"skipping {run.path}: it has no evaluations yet")
    runs = [r for r in runs if r.metrics]
    report.runs = len(runs)
    for run in runs:
        report.figures += plot_run(run, fmt, threshold)
    tasks = list(dict.fromkeys(r.config.get("task") for r in runs))
    for task in tasks:
        task_runs = [r for r in runs if r.config.get("task") == task]
        if len(task_runs) < 2 or Path(path) in [r.path for r in task_runs]:
            continue
        variants, repeats = group_variants(task_runs)
        report.warnings += repeats
        name = "comparison" if len(tasks) == 1 else f"comparison-{task}"
        report.overlays.append(plot_overlay(variants, Path(path) / f"{name}.{fmt}", threshold))
    return report

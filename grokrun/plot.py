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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from grokrun.filters import describe_variant
from grokrun.results import FINISHED, SWEEP_MANIFEST, Run, group_variants, load_runs
from grokrun.tasks import TASKS, task

FORMATS = ("png", "svg", "pdf")

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
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
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
            val = _band(runs, "weight_norm" if kind == "weight_norm" else f"val_{kind}")
            if val is not None:
                x, med, lo, hi = val
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
                ax.plot(x, med, color=color, label=label if ax is axes[0] else None)
                drawn.append(med)
            train = None if kind == "weight_norm" else _band(runs, f"train_{kind}")
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

def _numeric(axis: dict[str, Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in axis["values"])


def plot_sweep(folder: Path, manifest: dict[str, Any], table: list[dict[str, Any]], cells: dict, fmt: str = "png"
               ) -> list[Path]:
    """The figures of a sweep (``cells``: grokrun.sweep.cells, per point the median steps to the threshold).

    Two numeric axes or more: ``sweep_heatmap.<fmt>``, the median steps over the first two, a panel per
    combination of the others; censored cells say "≥". Otherwise ``sweep_steps.<fmt>``: the median steps
    against the first numeric axis (or the first swept one), a line per combination of the others, the min–max
    over the seeds that got there as a band, and points whose median is only a lower bound as open markers
    at that bound (the budget)."""
    axes = manifest["axes"]
    swept = [a for a in axes if len(a["values"]) > 1]
    if not swept:
        return []
    threshold = manifest.get("threshold", 0.99)
    numeric = [a for a in swept if _numeric(a)]
    title = f"{manifest.get('task')}: steps to {threshold:g} validation accuracy (median over seeds)"
    if len(numeric) >= 2:
        return [_heatmap(folder / f"sweep_heatmap.{fmt}", axes, numeric[0], numeric[1], cells, title)]
    return [_steps_figure(folder / f"sweep_steps.{fmt}", axes, numeric[0] if numeric else swept[0], cells, title)]


def _others(axes: list[dict[str, Any]], *exclude: dict[str, Any]) -> list[tuple[tuple[int, Any], ...]]:
    """Every combination of the axes other than ``exclude``, as ((axis index, value), ...)."""
    import itertools

    rest = [(i, a) for i, a in enumerate(axes) if all(a is not e for e in exclude)]
    return [tuple(zip((i for i, _ in rest), combo)) for combo in itertools.product(*(a["values"] for _, a in rest))]


def _label(axes: list[dict[str, Any]], combo: tuple[tuple[int, Any], ...]) -> str:
    return ", ".join(f"{axes[i]['name']}={_fmt_value(v)}" for i, v in combo if len(axes[i]["values"]) > 1)


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _point(axes: list[dict[str, Any]], combo, fixed: dict[int, Any]) -> tuple:
    values = dict(combo) | fixed
    return tuple(values[i] for i in range(len(axes)))


def _steps_figure(path: Path, axes, x_axis, cells, title: str) -> Path:
    xi = next(i for i, a in enumerate(axes) if a is x_axis)
    numeric = _numeric(x_axis)
    xs_all = list(x_axis["values"])
    positions = xs_all if numeric else list(range(len(xs_all)))
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for k, combo in enumerate(_others(axes, x_axis)):
        color = f"C{k % 10}"
        xs, known, bound, band = [], [], [], []
        for x, pos in zip(xs_all, positions):
            cell = cells.get(_point(axes, combo, {xi: x}))
            if cell is None or np.isinf(cell.lo):
                continue
            (known if np.isfinite(cell.hi) else bound).append((pos, cell.lo))
            xs.append(pos)
            if cell.low is not None:
                band.append((pos, cell.low, cell.high))
        if not xs:
            continue
        line = sorted(known + bound)
        ax.plot([p for p, _ in line], [v for _, v in line], color=color, alpha=0.6, label=_label(axes, combo) or None)
        if known:
            ax.plot(*zip(*known), "o", color=color)
        if bound:
            ax.plot(*zip(*bound), "o", color=color, markerfacecolor="white")
        if len(band) > 1:
            b = sorted(band)
            ax.fill_between([p for p, _, _ in b], [lo for _, lo, _ in b], [hi for _, _, hi in b], color=color,
                            alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel(x_axis["name"])
    if not numeric:
        ax.set_xticks(positions, [_fmt_value(v) for v in xs_all])
    ax.set_ylabel("steps (median; open: ≥, not reached by the median seed)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _finish(fig, path)


def _heatmap(path: Path, axes, x_axis, y_axis, cells, title: str) -> Path:
    from matplotlib.colors import LogNorm

    xi = next(i for i, a in enumerate(axes) if a is x_axis)
    yi = next(i for i, a in enumerate(axes) if a is y_axis)
    panels = _others(axes, x_axis, y_axis)
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig = Figure(figsize=(4.5 * cols, 3.8 * rows_n), layout="constrained")
    finite = [c.lo for c in cells.values() if np.isfinite(c.lo) and c.lo > 0]
    norm = LogNorm(min(finite), max(finite)) if finite and min(finite) < max(finite) else None
    for k, combo in enumerate(panels):
        ax = fig.add_subplot(rows_n, cols, k + 1)
        grid = np.full((len(y_axis["values"]), len(x_axis["values"])), np.nan)
        for r, y in enumerate(y_axis["values"]):
            for c, x in enumerate(x_axis["values"]):
                cell = cells.get(_point(axes, combo, {xi: x, yi: y}))
                if cell is None:
                    continue
                grid[r, c] = cell.lo if np.isfinite(cell.lo) else np.nan
                text = "never" if np.isinf(cell.lo) else (f"{cell.lo:,.0f}" if np.isfinite(cell.hi)
                                                          else f"≥{cell.lo:,.0f}")
                ax.text(c, r, text, ha="center", va="center", fontsize=7)
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
        ax.set_xticks(range(len(x_axis["values"])), [_fmt_value(v) for v in x_axis["values"]], fontsize=8)
        ax.set_yticks(range(len(y_axis["values"])), [_fmt_value(v) for v in y_axis["values"]], fontsize=8)
        ax.set_xlabel(x_axis["name"])
        ax.set_ylabel(y_axis["name"])
        if _label(axes, combo):
            ax.set_title(_label(axes, combo), fontsize=9)
    fig.colorbar(image, ax=fig.axes, label="steps (median)")
    fig.suptitle(title, fontsize=10)
    return _finish(fig, path)


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

def _pca_panel(ax, coords: np.ndarray, order: list[int] | None, labels: bool, axes_names: tuple[str, str],
               title: str) -> None:
    """One pair of principal components: a point per residue, labelled, joined in the order of a key frequency."""
    ax.scatter(coords[:, 0], coords[:, 1], s=10, c=np.arange(len(coords)), cmap="twilight", zorder=2)
    if order is not None:
        ring = order + order[:1]
        ax.plot(coords[ring, 0], coords[ring, 1], color="gray", linewidth=0.6, zorder=1)
    if labels:
        for x, (u, v) in enumerate(coords):
            ax.annotate(str(x), (u, v), fontsize=5, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel(axes_names[0])
    ax.set_ylabel(axes_names[1])
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")


def embedding_pca(panels: list[tuple[np.ndarray, list[int] | None, int | None]], path: Path, title: str) -> Path:
    """Pairs of principal components side by side: per panel the (symbols, 2) coordinates, the order that joins
    them (a key frequency's circle) and that frequency."""
    fig = Figure(figsize=(4.2 * len(panels), 4.4), layout="constrained")
    for i, (coords, order, k) in enumerate(panels):
        _pca_panel(fig.add_subplot(1, len(panels), i + 1), coords, order, True, (f"PC{2 * i + 1}", f"PC{2 * i + 2}"),
                   f"joined in the order of frequency {k}" if k else "no key frequency")
    fig.suptitle(title, fontsize=10)
    return _finish(fig, path)


def embedding_pca_gif(frames: list[tuple[np.ndarray, int]], order: list[int] | None, k: int | None,
                      path: Path) -> Path:
    """One frame per (coordinates on PC1-PC2, step), each joined in ``order`` (frequency k's)."""
    import io

    from PIL import Image

    from grokrun.results import atomic_write

    images = []
    for coords, step in frames:
        fig = Figure(figsize=(4.4, 4.4), layout="constrained")
        _pca_panel(fig.add_subplot(), coords, order, False, ("PC1", "PC2"),
                   f"step {step:,}" + (f" · joined in the order of frequency {k}" if k else ""))
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=80, format="png")
        images.append(Image.open(buffer).convert("P", palette=Image.Palette.ADAPTIVE))
    atomic_write(path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                                duration=400, loop=0))
    return path


def fourier_spectrum(share: list[float], keys: list[int], factor: float, path: Path, when: str) -> Path:
    """Share of the embedding's norm in each frequency, the key frequencies (share >= factor x uniform) marked."""
    freqs = np.arange(1, len(share) + 1)
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    colors = ["C3" if k in keys else "C0" for k in freqs]
    ax.bar(freqs, share, color=colors, width=0.8)
    ax.axhline(factor / len(share), color="gray", linestyle=":", label=f"key: ≥ {factor:g} × uniform share")
    for k in keys:
        ax.annotate(str(k), (k, share[k - 1]), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("frequency k (cos and sin of 2πkx/p over the residues x)")
    ax.set_ylabel("share of the embedding's norm²")
    key_total = sum(share[k - 1] for k in keys)
    ax.set_title(f"Fourier spectrum of the token embedding, {when}: keys {', '.join(map(str, keys)) or 'none'} "
                 f"carry {key_total:.0%}", fontsize=9)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def progress_measures(progress: list[dict[str, Any]], phases: dict[str, int | None], path: Path) -> Path:
    """Losses (train, test, restricted, excluded) above, Fourier sparsity and weight norm below, on one log-step
    axis (symmetric-log, so step 0 is drawn: linear below 1), with the phase marks."""
    steps = np.array([r["step"] for r in progress], dtype=float)
    fig = Figure(figsize=(7.5, 6.4), layout="constrained")
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    for i, (label, col) in enumerate((("train loss", "train_loss"), ("test loss", "test_loss"),
                                      ("restricted loss (test)", "restricted_loss"),
                                      ("excluded loss (train)", "excluded_loss"))):
        values = np.array([np.nan if r.get(col) is None else r[col] for r in progress], dtype=float)
        if np.isfinite(values).any():
            top.plot(steps, values, label=label, color=f"C{i}", marker=".", markersize=3)
    top.set_yscale("log")
    top.set_ylabel("cross-entropy (float64)")
    sparsity = np.array([r["fourier_sparsity"] for r in progress], dtype=float)
    bottom.plot(steps, sparsity, color="C4", marker=".", markersize=3, label="Fourier sparsity (key share)")
    bottom.set_ylabel("key frequencies' share")
    bottom.set_ylim(-0.02, 1.02)
    norm_ax = bottom.twinx()
    norm_ax.plot(steps, [r["weight_norm"] for r in progress], color="C5", marker=".", markersize=3,
                 label="weight norm")
    norm_ax.set_ylabel("L2 norm of all parameters")
    for ax in (top, bottom):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3, which="both")
        for j, (name, step) in enumerate(phases.items()):
            if step is not None:
                ax.axvline(step, color="black", linestyle=("--", "-.", ":")[j % 3], linewidth=0.8,
                           label=f"{name} ({step:,})" if ax is top else None)
    bottom.set_xlabel("optimization steps")
    top.legend(fontsize=7, ncol=2)
    handles = bottom.get_legend_handles_labels()[0] + norm_ax.get_legend_handles_labels()[0]
    bottom.legend(handles=handles, fontsize=7, loc="center left")
    top.set_title("progress measures over the weight snapshots", fontsize=9)
    return _finish(fig, path)

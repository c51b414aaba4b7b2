"""A sweep's figures, from its table and manifest only: steps to the threshold against each numeric swept setting
(one line per combination of the others, censored points marked), and a heatmap over two of them.

    figures = plot_sweep(folder, manifest, table, cells, "png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from grokrun.plot import _finish, power_labels


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
    drawn: list[set[tuple[float, float]]] = []  # each line's points: a line through another's is shifted
    for k, combo in enumerate(_others(axes, x_axis)):
        color, marker = f"C{k % 10}", "os^Dv<>p"[k % 8]
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
        # Two lines through the same values (two settings censored at one budget) would hide each other: a line
        # that meets one drawn before is shifted up by a few points on the page, its values unchanged.
        shift = 3.0 * sum(bool(points & set(line)) for points in drawn)
        drawn.append(set(line))
        artists = ax.plot([p for p, _ in line], [v for _, v in line], color=color, alpha=0.6,
                          label=_label(axes, combo) or None)
        if known:
            artists += ax.plot(*zip(*known), marker, color=color, linestyle="none")
        if bound:
            artists += ax.plot(*zip(*bound), marker, color=color, markerfacecolor="white", linestyle="none")
        if shift:  # (set after plotting: the axes' limits are those of the values)
            for artist in artists:
                artist.set_transform(offset_copy(ax.transData, fig=fig, y=shift, units="points"))
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
    power_labels(ax, "y")
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

"""The figures of ``grokrun analyze``: embeddings on their principal components (and their animation), the
Fourier spectrum of the embedding, and the progress measures over the snapshots.

    embedding_pca(panels, run_dir / "embedding_pca.png", title)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from grokrun.plot import _finish, power_labels


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
    with_llc = any(r.get("llc") is not None for r in progress)
    fig = Figure(figsize=(7.5, 9.0 if with_llc else 6.4), layout="constrained")
    top = fig.add_subplot(3 if with_llc else 2, 1, 1)
    bottom = fig.add_subplot(3 if with_llc else 2, 1, 2, sharex=top)
    panels = [top, bottom]
    if with_llc:
        panels.append(_llc_panel(fig.add_subplot(3, 1, 3, sharex=top), progress))
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
    for ax in panels:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3, which="both")
        power_labels(ax)
        for j, (name, step) in enumerate(phases.items()):
            if step is not None:
                ax.axvline(step, color="black", linestyle=("--", "-.", ":")[j % 3], linewidth=0.8,
                           label=f"{name} ({step:,})" if ax is top else None)
    panels[-1].set_xlabel("optimization steps")
    top.legend(fontsize=7, ncol=2)
    handles = bottom.get_legend_handles_labels()[0] + norm_ax.get_legend_handles_labels()[0]
    bottom.legend(handles=handles, fontsize=7, loc="center left")
    top.set_title("progress measures over the weight snapshots", fontsize=9)
    return _finish(fig, path)


def _llc_panel(ax, progress: list[dict[str, Any]]):
    """The LLC at the snapshots where it was estimated: mean over the chains, their standard deviation as a bar,
    estimates the diagnostics flag as open markers."""
    rows = [r for r in progress if r.get("llc") is not None]
    x = np.array([r["step"] for r in rows], dtype=float)
    y = np.array([r["llc"] for r in rows], dtype=float)
    err = np.array([r.get("llc_std") or 0.0 for r in rows], dtype=float)
    flagged = np.array([bool(r.get("llc_warning")) for r in rows])
    ax.errorbar(x, y, yerr=err, color="C6", marker=".", markersize=4, capsize=2, linewidth=1,
                label="LLC (devinterp SGLD; bar: std over chains)")
    if flagged.any():
        ax.plot(x[flagged], y[flagged], "o", color="C6", markerfacecolor="white", label="unreliable (see progress.csv)")
    ax.set_ylabel("local learning coefficient")
    ax.legend(fontsize=7, loc="best")
    return ax


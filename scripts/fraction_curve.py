"""The data-fraction curve of a sweep over the training fraction (configs/sweeps/nanda_fraction.toml): steps until
the test loss falls below a target and until a test accuracy, against the fraction, one line per filter (median
over seeds, min-max band), a run that did not get there marked at the steps it ran (an open triangle: "more
than this"). Read from each run's metrics.csv, so runs of any age count; prints the table it draws.

    python scripts/fraction_curve.py results/sweep-modular-...      # writes FOLDER/fraction_curve.png
    python scripts/fraction_curve.py FOLDER --loss 0.01 --acc 0.99 --out curve.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure

from grokrun.results import first_at, first_below
from grokrun.runs import find_runs, load_runs


def curve(folder: Path, loss: float, acc: float) -> dict[str, dict[float, list[tuple[int, bool]]]]:
    """{criterion: {(filter, fraction): [(steps, reached), ...] in the order of the seeds}}; a run not reaching it:
    (its steps, False)."""
    runs, _ = load_runs(find_runs(folder)[0])
    out: dict[str, dict] = {"loss": {}, "acc": {}}
    for run in sorted(runs, key=lambda r: r.config["seed"]):
        cfg = run.config
        key = (cfg["filter"]["name"], float(cfg[cfg["task"]]["train_frac"]))
        ran = int(run.metrics[-1]["step"]) if run.metrics else 0
        for name, row in (("loss", first_below(run.metrics, "val_loss", loss)),
                          ("acc", first_at(run.metrics, "val_acc", acc))):
            out[name].setdefault(key, []).append((int(row["step"]), True) if row is not None else (ran, False))
    return out


def median(cell: list[tuple[int, bool]]) -> tuple[float, bool]:
    """The median over seeds and whether it is known: a run that did not get there counts as more than any that
    did, so the median is known when more than half the runs got there (the table's "≥", no point on the line)."""
    ordered = sorted(cell, key=lambda run: (not run[1], run[0]))
    middle = ordered[(len(ordered) - 1) // 2:len(ordered) // 2 + 1]
    return sum(n for n, _ in middle) / len(middle), all(ok for _, ok in middle)


def draw(data: dict, loss: float, acc: float, path: Path) -> None:
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    titles = {"loss": f"steps until test loss < {loss:g}", "acc": f"steps to {acc:.0%} test accuracy"}
    for k, (name, points) in enumerate(data.items()):
        ax = fig.add_subplot(1, 2, k + 1)
        for i, filt in enumerate(sorted({f for f, _ in points})):
            xs, med, lo, hi, censored = [], [], [], [], []
            for frac in sorted(fr for f, fr in points if f == filt):
                cell = points[(filt, frac)]
                censored += [(frac, s) for s, ok in cell if not ok]
                middle, known = median(cell)
                if known:  # a line point, its band min to max
                    xs.append(frac)
                    med.append(middle)
                    lo.append(min(s for s, ok in cell if ok))
                    hi.append(max(s for s, _ in cell))
            ax.plot(xs, med, marker="o", color=f"C{i}", label=f"{filt} (median of seeds)")
            ax.fill_between(xs, lo, hi, color=f"C{i}", alpha=0.2, linewidth=0)
            if censored:
                ax.scatter(*zip(*censored), marker="^", facecolors="none", edgecolors=f"C{i}",
                           label=f"{filt}: not reached (at the steps run)")
        ax.set_yscale("log")
        ax.set_xlabel("fraction of the table used for training")
        ax.set_ylabel("optimization steps")
        ax.set_title(titles[name], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def steps(n: float, reached: bool) -> str:
    return f"{round(n):,}" if reached else f"≥ {round(n):,}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--loss", type=float, default=0.01, help="test-loss target (Nanda et al.: 1e-2)")
    ap.add_argument("--acc", type=float, default=0.99, help="test-accuracy target")
    ap.add_argument("--out", type=Path, default=None, help="figure file (default FOLDER/fraction_curve.png)")
    args = ap.parse_args()
    data = curve(args.folder, args.loss, args.acc)
    if not data["loss"]:
        sys.exit(f"error: no runs in {args.folder}")
    print(f"| filter | fraction | steps to test loss < {args.loss:g}, each seed | median | steps to {args.acc:.0%} "
          "test acc, each seed | median |")
    print("| --- | ---: | --- | ---: | --- | ---: |")
    for key in sorted(data["loss"]):
        cells = [cell for n in data for cell in (" / ".join(steps(*seed) for seed in data[n][key]),
                                                 steps(*median(data[n][key])))]
        print(f"| {key[0]} | {key[1]:g} | {' | '.join(cells)} |")
    out = args.out or args.folder / "fraction_curve.png"
    draw(data, args.loss, args.acc, out)
    print(f"figure: {out}")


if __name__ == "__main__":
    main()

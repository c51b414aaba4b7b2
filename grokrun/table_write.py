"""The comparison table written out: a run's one-line headline, the table's columns, and the table as a rich
table, Markdown and CSV (grokrun.table computes it).

    write_markdown(rows, path, threshold=0.95, title="modular"); write_csv(rows, path, 0.95)
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from grokrun.results import FINISHED, write_text_atomic
from grokrun.runs import Run
from grokrun.table import (CSV_COLUMNS, Bound, Row, count, fmt_bound, fmt_delay, fmt_seconds, fmt_speedup, fmt_steps, percent,
                           run_result, _opt, _range_text)


def headline(run: Run, threshold: float, status: bool = True, machine: bool = False) -> str:
    """One line on one run: when it reached the threshold (or its best), and ms/step; with ``status``, a
    run that did not finish says how it ended; with ``machine``, peak memory and device follow."""
    r = run_result(run, threshold)
    if r.best_val_acc is not None and r.reached:
        head = f"{percent(threshold)} val acc at step {r.steps_to.lo:,} ({r.wall_to.lo:.1f} s)"
    elif r.best_val_acc is not None:
        head = f"{percent(threshold)} val acc not reached in {count(r.steps, 'step')} (best {r.best_val_acc:.3f})"
    elif r.min_val_loss is not None:
        head = f"min val loss {r.min_val_loss:.4g} at step {r.min_val_loss_step:,}"
    else:
        head = "no finite validation loss"
    if status and r.status not in FINISHED:
        head = f"{r.ended}; {head}"
    text = f"{head} · " + ("no steps" if r.ms_per_step is None else f"{r.ms_per_step:.2f} ms/step")
    if machine:
        text += f" · peak {_opt(r.peak_memory_mb, '.0f')} MB · {(run.summary or {}).get('device', '?')}"
    return text


def columns(rows: list[Row], threshold: float, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the markdown table (compact: the terminal's); notes only when there are any."""
    pct = percent(threshold)
    if any(r.has_accuracy for r in rows):
        headers = ["variant", f"reached {pct}", f"steps to {pct} (median)", "steps min–max",
                   f"time to {pct} (median, s)", "time min–max", "grokking delay (median)", "ms/step", "peak MB",
                   "speedup (steps)", "speedup (time)", "best val acc", "min val loss", "notes"]
        cells = [[r.name, f"{r.reached}/{len(r.results)}", fmt_bound(r.steps_to, fmt_steps),
                  _range_text(r.steps_range, fmt_steps), fmt_bound(r.wall_to, fmt_seconds),
                  _range_text(r.wall_range, fmt_seconds), fmt_delay(r.delay, r.delay_ratio),
                  _opt(r.ms_per_step, ".2f"), _opt(r.peak_memory_mb, ",.0f"),
                  "baseline" if i == 0 else fmt_speedup(r.speedup_steps),
                  "baseline" if i == 0 else fmt_speedup(r.speedup_wall),
                  _opt(r.best_val_acc, ".3f"), _opt(r.min_val_loss, ".4g"), "; ".join(r.notes)]
                 for i, r in enumerate(rows)]
    else:  # regression: the headline is the lowest validation loss and when it came
        headers = ["variant", "seeds", "min val loss (median)", "loss min–max", "at step (median)", "vs baseline",
                   "ms/step", "peak MB", "notes"]
        cells = [[r.name, str(len(r.results)), _opt(r.min_val_loss, ".4g"),
                  _range_text(r.min_val_loss_range, lambda v: f"{v:.4g}"), _opt(r.min_val_loss_step, ",.0f"),
                  "baseline" if i == 0 else _opt(r.loss_vs_baseline, ".3g") + ("×" if r.loss_vs_baseline else ""),
                  _opt(r.ms_per_step, ".2f"), _opt(r.peak_memory_mb, ",.0f"), "; ".join(r.notes)]
                 for i, r in enumerate(rows)]
    if not any(r.notes for r in rows):
        headers, cells = headers[:-1], [c[:-1] for c in cells]
    if compact:  # the terminal: each median over its min–max, in one column
        keep = [i for i, h in enumerate(headers) if not h.endswith("min–max")]
        for c in cells:
            for i, h in enumerate(headers):
                if h.endswith("min–max") and c[i] != "—":
                    c[i - 1] += f"\n({c[i]})"
        headers = [headers[i].replace(" (median)", "").replace(" (median, s)", " (s)") for i in keep]
        cells = [[c[i] for i in keep] for c in cells]
    return headers, cells


def footnote(rows: list[Row], threshold: float) -> str:
    seeds = sorted({str(r.seed) for row in rows for r in row.results})
    text = (f"Median over seeds ({', '.join(seeds)}); min–max over the seeds that reached the threshold. "
            "Time is training time, evaluation excluded. Speedups are baseline median / variant median. "
            "Grokking delay: steps to the threshold on validation minus on the training set (× their ratio), "
            "the training set's crossing read where it is scored (every 10th evaluation by default).")
    together = {(row.name, r.run.summary.get("trained_with")) for row in rows for r in row.results
                if r.run.summary and r.run.summary.get("trained_with", 1) > 1}
    if together:
        text += (" Seeds trained together as one stacked model (" + ", ".join(f"{name}: {n}" for name, n in
                 sorted(together)) + "): their ms/step and times are the stack's, for all its seeds at once.")
    if any(not (row.steps_to and row.steps_to.exact) for row in rows if row.has_accuracy):
        text += (f" \"≥\": a run that did not reach {threshold:g} val acc counts as more than the steps it ran,"
                 " so the median is a lower bound (and the speedup against it too); a diverged run never reaches it.")
    return text


def render_rich(rows: list[Row], threshold: float, title: str = ""):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # Text, not markup: a variant named "modular-ema [train.max_steps=200]" keeps its brackets
    headers, cells = columns(rows, threshold, compact=True)
    table = Table(title=Text(title) if title else None, caption=Text(footnote(rows, threshold)),
                  caption_justify="left", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for h in headers:
        table.add_column(Text(h), justify="left" if h in ("variant", "notes") else "right", overflow="fold")
    for row in cells:
        table.add_row(*map(Text, row))
    return table


def write_markdown(rows: list[Row], path: Path, threshold: float, title: str, details: str = "") -> None:
    headers, cells = columns(rows, threshold)

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    out = [f"# {title}", "", line(headers), line(["---"] * len(headers)), *map(line, cells), "",
           footnote(rows, threshold), ""]
    if details:
        out += [details, ""]
    out += ["## Runs", "", line(["variant", "seed", "status", "steps", f"steps to {threshold:g}", "ms/step",
                                 "peak MB", "best val acc", "min val loss", "run directory"]),
            line(["---"] * 10)]
    for row in rows:
        for r in row.results:
            out.append(line([row.name, str(r.seed), r.status, f"{r.steps:,}",
                             fmt_steps(r.steps_to.lo) if r.reached else "not reached", _opt(r.ms_per_step, ".2f"),
                             _opt(r.peak_memory_mb, ",.0f"), _opt(r.best_val_acc, ".3f"),
                             _opt(r.min_val_loss, ".4g"), str(r.run.path)]))
    write_text_atomic(path, "\n".join(out) + "\n")


def write_csv(rows: list[Row], path: Path, threshold: float) -> None:
    """The numbers behind the table. A median is [lo, hi]: equal when known, hi = inf when only bounded below."""
    def num(v: float | None) -> str:
        return "" if v is None else repr(float(v)) if isinstance(v, float) else str(v)

    def lo_hi(b: Bound | None) -> list[str]:
        return ["", ""] if b is None else [num(b.lo), num(b.hi)]

    def min_max(r: tuple[float, float] | None) -> list[str]:
        return ["", ""] if r is None else [num(r[0]), num(r[1])]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in rows:
        statuses: dict[str, int] = {}
        for r in row.results:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        w.writerow([row.name, len(row.results), row.reached if row.has_accuracy else "", threshold,
                    *lo_hi(row.steps_to if row.has_accuracy else None), *min_max(row.steps_range),
                    *lo_hi(row.wall_to if row.has_accuracy else None), *min_max(row.wall_range),
                    *lo_hi(row.speedup_steps), *lo_hi(row.speedup_wall),
                    *lo_hi(row.delay if row.has_accuracy else None), *lo_hi(row.delay_ratio if row.has_accuracy else None),
                    num(row.ms_per_step),
                    num(row.peak_memory_mb), num(row.best_val_acc), num(row.min_val_loss),
                    *min_max(row.min_val_loss_range), num(row.min_val_loss_step),
                    ";".join(f"{k}:{v}" for k, v in statuses.items())])
    write_text_atomic(path, buf.getvalue())

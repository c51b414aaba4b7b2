"""The comparison table, from run directories only: Grokfast's table over seeds, one row per variant.

    rows = tabulate(variants, threshold=0.95); write_markdown(rows, path); write_csv(rows, path)

A run that did not reach the threshold tells us only a lower bound (more than the steps it ran), and a
diverged run never will. So every median here is an interval [lo, hi]: the median with each censored
run at its bound, and with it at infinity. Equal ends: the median is known; otherwise it is written
"≥ lo". Speedups divide such intervals, so "≥ 3.3×" is what a baseline that never reached the
threshold within its budget allows us to say, and no more.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokrun.results import FINISHED, Run, first_at, write_text_atomic

INF = math.inf


@dataclass(frozen=True)
class Bound:
    """A value known to lie in [lo, hi]; lo == hi when it is known exactly. hi may be infinite."""
    lo: float
    hi: float

    @property
    def exact(self) -> bool:
        return self.lo == self.hi


def median_bound(values: list[Bound]) -> Bound | None:
    """The median's interval: the median is monotone in every value, so it lies between these two."""
    if not values:
        return None
    return Bound(statistics.median(v.lo for v in values), statistics.median(v.hi for v in values))


def _div(a: float, b: float) -> float:
    if b == 0:
        return INF if a > 0 else math.nan
    if math.isinf(b):
        return 0.0 if not math.isinf(a) else math.nan
    return a / b


def ratio(num: Bound | None, den: Bound | None) -> Bound | None:
    """num / den for interval values: the smallest and largest quotient they allow."""
    if num is None or den is None:
        return None
    lo, hi = _div(num.lo, den.hi), _div(num.hi, den.lo)
    return None if math.isnan(lo) or math.isnan(hi) else Bound(lo, hi)


@dataclass
class RunResult:
    """What one run says about the threshold and the rest of the row."""
    run: Run
    seed: Any
    status: str  # a summary status, or "incomplete" when the run has no summary.json
    steps: int
    reached: bool
    steps_to: Bound  # steps to the threshold (a bound when not reached)
    wall_to: Bound  # training seconds to the threshold
    ms_per_step: float | None
    peak_memory_mb: float | None
    best_val_acc: float | None
    min_val_loss: float | None
    min_val_loss_step: int | None
    diverged_at: int | None  # the first step with a non-finite loss or gradient
    delay: Bound | None = None  # grokking delay: steps to the threshold on validation minus on the training set
    delay_ratio: Bound | None = None  # and their ratio

    @property
    def ended(self) -> str:
        """How a run that did not finish ended: "diverged at step 2", "interrupted at step 8"."""
        step = self.diverged_at if self.status == "diverged" and self.diverged_at is not None else self.steps
        return f"{self.status} at step {step:,}"


def count(n: int, noun: str) -> str:
    """"1 step", "2 steps"."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


def run_result(run: Run, threshold: float) -> RunResult:
    rows = run.metrics
    s = run.summary or {}
    status = s.get("status", "incomplete")
    steps = s.get("steps", rows[-1]["step"] if rows else 0)
    wall = s.get("wall_s", rows[-1]["wall_s"] if rows else 0.0)
    hit = first_at(rows, "val_acc", threshold)
    if hit is not None:
        steps_to, wall_to = Bound(hit["step"], hit["step"]), Bound(hit["wall_s"], hit["wall_s"])
    elif status == "diverged":  # a run whose loss is not finite never gets there
        steps_to, wall_to = Bound(INF, INF), Bound(INF, INF)
    else:  # it would take more than what it ran
        steps_to, wall_to = Bound(steps, INF), Bound(wall, INF)
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    losses = [(r["val_loss"], r["step"]) for r in rows if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    min_loss, min_step = min(losses, default=(None, None))
    train_hit = first_at(rows, "train_acc", threshold)
    delay = delay_ratio = None
    if train_hit is not None:  # where validation never got there, the delay is at least what was run since
        delay = Bound(steps_to.lo - train_hit["step"], steps_to.hi - train_hit["step"])
        delay_ratio = ratio(steps_to, Bound(train_hit["step"], train_hit["step"]))
    return RunResult(run, run.config.get("seed"), status, steps, hit is not None, steps_to, wall_to,
                     s.get("ms_per_step"), s.get("peak_memory_mb"), max(accs, default=None), min_loss, min_step,
                     s.get("diverged_at"), delay, delay_ratio)


@dataclass
class Row:
    """One variant: its runs and their statistics over seeds."""
    name: str
    results: list[RunResult]
    has_accuracy: bool
    steps_to: Bound | None = None
    wall_to: Bound | None = None
    steps_range: tuple[float, float] | None = None  # over the seeds that reached the threshold
    wall_range: tuple[float, float] | None = None
    speedup_steps: Bound | None = None
    speedup_wall: Bound | None = None
    delay: Bound | None = None  # median grokking delay (steps), over the runs whose training set got there
    delay_ratio: Bound | None = None
    ms_per_step: float | None = None
    peak_memory_mb: float | None = None
    best_val_acc: float | None = None
    min_val_loss: float | None = None
    min_val_loss_range: tuple[float, float] | None = None
    min_val_loss_step: float | None = None
    loss_vs_baseline: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reached(self) -> int:
        return sum(r.reached for r in self.results)


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _range(values: list[float | None]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else None


def tabulate(variants: list[tuple[str, list[Run]]], threshold: float = 0.95) -> list[Row]:
    """One row per variant; the first variant is the baseline of the speedups."""
    rows = []
    for name, runs in variants:
        results = sorted((run_result(r, threshold) for r in runs), key=lambda r: str(r.seed))
        has_accuracy = any(r.best_val_acc is not None for r in results)
        row = Row(name, results, has_accuracy)
        row.steps_to = median_bound([r.steps_to for r in results])
        row.wall_to = median_bound([r.wall_to for r in results])
        row.steps_range = _range([r.steps_to.lo for r in results if r.reached])
        row.wall_range = _range([r.wall_to.lo for r in results if r.reached])
        row.delay = median_bound([r.delay for r in results if r.delay is not None])
        row.delay_ratio = median_bound([r.delay_ratio for r in results if r.delay_ratio is not None])
        row.ms_per_step = _median([r.ms_per_step for r in results])
        row.peak_memory_mb = max((r.peak_memory_mb for r in results if r.peak_memory_mb is not None), default=None)
        row.best_val_acc = _median([r.best_val_acc for r in results])
        row.min_val_loss = _median([r.min_val_loss for r in results])
        row.min_val_loss_range = _range([r.min_val_loss for r in results])
        row.min_val_loss_step = _median([r.min_val_loss_step for r in results])
        for r in results:
            if r.status not in FINISHED:
                row.notes.append(f"seed {r.seed} {r.ended}")
        rows.append(row)
    if rows:
        base = rows[0]
        for row in rows[1:]:
            if base.has_accuracy and row.has_accuracy:
                row.speedup_steps = ratio(base.steps_to, row.steps_to)
                row.speedup_wall = ratio(base.wall_to, row.wall_to)
            if base.min_val_loss and row.min_val_loss is not None:
                row.loss_vs_baseline = row.min_val_loss / base.min_val_loss
    return rows


# --- formatting ----------------------------------------------------------------------------------------

def fmt_steps(v: float) -> str:
    return f"{v:,.0f}"


def fmt_seconds(v: float) -> str:
    return f"{v:,.1f}"


def fmt_bound(b: Bound | None, fmt) -> str:
    """Known: the value; only a lower bound: "≥ lo"; nothing known (never reached): "—"."""
    if b is None or math.isinf(b.lo):
        return "—"
    return fmt(b.lo) if b.exact else f"≥ {fmt(b.lo)}"


def fmt_speedup(b: Bound | None) -> str:
    def x(v: float) -> str:
        return f"{v:,.0f}×" if v >= 1000 else f"{v:.3g}×"

    if b is None or b.hi == 0:  # zero: a variant that never gets there
        return "—"
    if b.exact:
        return x(b.lo)
    if b.lo > 0:
        return f"≥ {x(b.lo)}"
    if math.isfinite(b.hi):
        return f"≤ {x(b.hi)}"
    return "—"


def fmt_delay(steps: Bound | None, times: Bound | None) -> str:
    """"1,200 (×2.5)": steps from the training set's crossing to validation's, and their ratio; "≥" where
    validation did not get there; "—" where the training set did not either."""
    if steps is None or math.isinf(steps.lo):
        return "—"
    text = fmt_bound(steps, fmt_steps)
    if times is not None and not math.isinf(times.lo):
        text += f" (×{times.lo:.3g})" if times.exact else f" (≥ ×{times.lo:.3g})"
    return text


def _opt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _range_text(r: tuple[float, float] | None, fmt) -> str:
    return "—" if r is None else f"{fmt(r[0])}–{fmt(r[1])}"


def percent(threshold: float) -> str:
    return f"{threshold:.0%}" if round(threshold * 100, 6).is_integer() else f"{threshold:g}"


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


CSV_COLUMNS = ["variant", "runs", "reached", "threshold", "steps_to_threshold_median_lo",
               "steps_to_threshold_median_hi", "steps_to_threshold_min", "steps_to_threshold_max",
               "wall_s_to_threshold_median_lo", "wall_s_to_threshold_median_hi", "wall_s_to_threshold_min",
               "wall_s_to_threshold_max", "speedup_steps_lo", "speedup_steps_hi", "speedup_wall_lo",
               "speedup_wall_hi", "grokking_delay_median_lo", "grokking_delay_median_hi", "delay_ratio_median_lo",
               "delay_ratio_median_hi", "ms_per_step_median", "peak_memory_mb_max", "best_val_acc_median",
               "min_val_loss_median", "min_val_loss_min", "min_val_loss_max", "min_val_loss_step_median",
               "statuses"]


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

"""The comparison table, from run directories only: Grokfast's table over seeds, one row per variant.

    rows = tabulate(variants, threshold=0.95); write_markdown(rows, path); write_csv(rows, path)

A run that did not reach the threshold tells us only a lower bound (more than the steps it ran), and a
diverged run never will. So every median here is an interval [lo, hi]: the median with each censored
run at its bound, and with it at infinity. Equal ends: the median is known; otherwise it is written
"≥ lo". Speedups divide such intervals, so "≥ 3.3×" is what a baseline that never reached the
threshold within its budget allows us to say, and no more.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from grokrun.results import FINISHED, first_at

from grokrun.runs import Run

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


CSV_COLUMNS = ["variant", "runs", "reached", "threshold", "steps_to_threshold_median_lo",
               "steps_to_threshold_median_hi", "steps_to_threshold_min", "steps_to_threshold_max",
               "wall_s_to_threshold_median_lo", "wall_s_to_threshold_median_hi", "wall_s_to_threshold_min",
               "wall_s_to_threshold_max", "speedup_steps_lo", "speedup_steps_hi", "speedup_wall_lo",
               "speedup_wall_hi", "grokking_delay_median_lo", "grokking_delay_median_hi", "delay_ratio_median_lo",
               "delay_ratio_median_hi", "ms_per_step_median", "peak_memory_mb_max", "best_val_acc_median",
               "min_val_loss_median", "min_val_loss_min", "min_val_loss_max", "min_val_loss_step_median",
               "statuses"]

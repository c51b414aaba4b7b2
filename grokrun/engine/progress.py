"""A run's progress as it trains: a bar on a terminal; where the output goes to a file or a pipe (a cluster job,
nohup, a notebook), a plain line at an evaluation, at most one every ``PLAIN_EVERY_S`` seconds.

    with ProgressReport("modular ema seed 0", total=10_000, start=0, quiet=False, console=None) as p:
        p.update(step, wall_s, rows)
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressReport:
    """The bar, or plain lines (see the module's docstring)."""

    PLAIN_EVERY_S = 10.0

    def __init__(self, name: str, total: int, start: int, quiet: bool, console: Console | None):
        self.name, self.total = name, total
        self.console = console or Console(highlight=False)
        self.plain = not quiet and not self.console.is_terminal
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[stats]}"),
                            TimeElapsedColumn(), console=self.console, disable=quiet or self.plain, transient=False)
        self.task = self.bar.add_task(escape(name), total=total, completed=start, rate="", stats="")
        self.printed = time.perf_counter()

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, step: int, wall: float, rows: list[dict[str, Any]], seeds: int = 1) -> None:
        """After an evaluation: ``rows`` of the seeds still training, of ``seeds`` started together."""
        rate = f"{step / max(wall, 1e-9):.1f} it/s"
        stats = _stats(rows[0]) if seeds == 1 else _stats_of_seeds(rows, seeds)
        self.bar.update(self.task, completed=step, rate=rate, stats=stats)
        if self.plain and time.perf_counter() - self.printed >= self.PLAIN_EVERY_S:
            self.console.print(escape(f"{self.name}: step {step:,}/{self.total:,} · {rate} · {stats}"))
            self.printed = time.perf_counter()


def _stats(row: dict[str, Any]) -> str:
    """"acc train 1.000 val 0.981 · loss train 0.0123 val 0.0871"; a row without the training set scored
    (see records.evaluate) shows validation alone."""
    parts = []
    for metric, spec in (("acc", ".3f"), ("loss", ".3g")):
        values = [f"{split} {row[f'{split}_{metric}']:{spec}}" for split in ("train", "val")
                  if row.get(f"{split}_{metric}") is not None]
        if values:
            parts.append(f"{metric} " + " ".join(values))
    return " · ".join(parts)


def _stats_of_seeds(rows: list[dict[str, Any]], seeds: int) -> str:
    """"16/16 seeds training · val acc median 0.981 (0.702-0.995)"; loss where the task has no accuracy."""
    metric, spec = ("val_acc", ".3f") if rows[0].get("val_acc") is not None else ("val_loss", ".3g")
    values = sorted(r[metric] for r in rows if r.get(metric) is not None)
    text = f"{len(rows)}/{seeds} seeds training"
    if values:
        text += (f" · {metric.replace('_', ' ')} median {statistics.median(values):{spec}} "
                 f"({values[0]:{spec}}-{values[-1]:{spec}})")
    return text


def format_seeds(seeds: list[int]) -> str:
    """[0, 1, 2, 3, 7] -> "0-3,7"."""
    parts, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def run_name(cfgs: list) -> str:
    """The progress bar's label: "modular ema seed 0", or "... seeds 0-15" for a stack."""
    cfg = cfgs[0]
    if len(cfgs) == 1:
        return f"{cfg.task} {cfg.filter.name} seed {cfg.seed}"
    return f"{cfg.task} {cfg.filter.name} seeds {format_seeds([c.seed for c in cfgs])}"

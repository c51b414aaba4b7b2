"""Run directories: the one contract between training and compare/plot.

    <out>/<name>/config.json   the resolved config (grokrun train --config <run>/config.json reruns it)
    <out>/<name>/metrics.csv   one row per evaluation, header first
    <out>/<name>/summary.json  written last, so a run without it did not finish

A run directory is never overwritten. Nothing here imports torch or a task.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRIC_COLUMNS = ["step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc"]
THRESHOLDS = (0.5, 0.9, 0.95, 0.99)
STATUSES = ("completed", "stopped_at_target", "interrupted", "diverged")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside ``path``, then rename: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_run_dir(out: Path, name: str) -> Path:
    """Create ``out/name``, or ``out/name-2``, ``-3``... if it is taken."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory name under {out} for {name}")


class RunWriter:
    """Writes one run directory as training goes: config first, a metrics row per evaluation, summary last."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = path
        write_json_atomic(path / "config.json", config)
        self._file = open(path / "metrics.csv", "w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(METRIC_COLUMNS)
        self._file.flush()
        self.rows: list[dict[str, Any]] = []

    def log(self, row: dict[str, Any]) -> None:
        """Append one evaluation and flush it, so a crash loses at most the current interval."""
        self.rows.append(row)
        self._csv.writerow(_cell(row.get(c)) for c in METRIC_COLUMNS)
        self._file.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        self._file.close()
        write_json_atomic(self.path / "summary.json", summary)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def metric_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps and wall-clock to each val-accuracy threshold, best val acc, min val loss and its step."""
    def first(threshold: float) -> dict | None:
        return next((r for r in rows if r.get("val_acc") is not None and r["val_acc"] >= threshold), None)

    hits = {f"{t:g}": first(t) for t in THRESHOLDS}
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    losses = [(r["val_loss"], r["step"]) for r in rows if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    best_loss = min(losses, default=(None, None))
    return {
        "steps_to_val_acc": {k: (r["step"] if r else None) for k, r in hits.items()},
        "wall_s_to_val_acc": {k: (r["wall_s"] if r else None) for k, r in hits.items()},
        "best_val_acc": max(accs, default=None),
        "min_val_loss": best_loss[0],
        "min_val_loss_step": best_loss[1],
    }


# --- reading -------------------------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, float | None]]
    summary: dict[str, Any] | None  # None: the run never finished (crashed or still running)


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "metrics.csv").is_file()


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    with open(path / "metrics.csv", newline="") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {k: (float(v) if v not in ("", None) else None) for k, v in raw.items()}
            if row.get("step") is not None:
                row["step"] = int(row["step"])
            rows.append(row)
    return rows


def read_run(path: Path) -> Run:
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return Run(path, config, read_metrics(path), summary)

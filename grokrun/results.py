"""Run directories: the one contract between training and compare/plot.

    <out>/<name>/config.json   the resolved config (grokrun train --config <run>/config.json reruns it)
    <out>/<name>/metrics.csv   one row per evaluation, header first
    <out>/<name>/summary.json  written last, so a run without it did not finish

A run directory is never overwritten. Nothing here imports torch or a task.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from grokrun.errors import UserError


# The files of a run directory; every reader and writer names them through these.
CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.json", "metrics.csv", "summary.json", "checkpoint.pt"
RUN_FILES = (CONFIG, METRICS, SUMMARY, CHECKPOINT)

METRIC_COLUMNS = ["step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "weight_norm", "softmax_collapse"]
THRESHOLDS = (0.5, 0.9, 0.95, 0.99)
SWEEP_MANIFEST = "sweep.json"  # in a sweep's folder: what was swept (grokrun.sweep)
STATUSES = ("completed", "stopped_at_target", "interrupted", "diverged")
FINISHED = ("completed", "stopped_at_target")  # ended as planned
FINAL = (*FINISHED, "diverged")  # nothing left to resume: running it again gives the same


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level: {"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def tmp_name(path: Path) -> Path:
    """The temporary file an atomic write of ``path`` goes through."""
    return path.with_name(f".{path.name}.tmp")


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], durable: bool = True) -> None:
    """``write`` into a temporary file beside ``path``, flushed to disk, then renamed over it: readers see
    the old file or the new one, never half of one, and no temporary file is left behind. ``durable=False``
    skips the wait for the disk (still whole after a crash of the process, not after a power cut)."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def check_folder(path: Path) -> None:
    """UserError if ``path`` is a file where a folder of results should be (--out)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a folder")


def make_folder(path: Path) -> None:
    """Create a folder of results (and its parents), or UserError saying why it cannot be."""
    check_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # no permission, a name too long, a full disk
        raise UserError(f"cannot create {path}: {e.strerror or e}") from None


def free_name(out: Path, name: str) -> Path:
    """``out/name``, or ``out/name-2``, ``-3``... the first that does not exist yet (nothing is created)."""
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        if not path.exists():
            return path
    raise UserError(f"no free name under {out} for {name} (up to {name}-9999 exist)")


def new_run_dir(out: Path, name: str) -> Path:
    """Create ``out/name``, or ``out/name-2``, ``-3``... if it is taken. UserError if it cannot be created."""
    make_folder(out)
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"cannot create a run directory in {out}: {e.strerror or e}") from None
    raise UserError(f"no free run directory name under {out} for {name} (up to {name}-9999 exist)")


class RunWriter:
    """Writes one run directory as training goes: config first, a metrics row per evaluation, summary last."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = path
        write_json_atomic(path / CONFIG, config)
        self._file = open(path / METRICS, "w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(METRIC_COLUMNS)
        self._file.flush()
        self.rows: list[dict[str, Any]] = []
        self._board = _board(path) if config.get("tensorboard") else None

    @classmethod
    def resume(cls, path: Path, upto: int) -> "RunWriter":
        """Continue a run's metrics.csv from its checkpoint at step ``upto``: rows after it (written
        before a crash, past the checkpoint) are dropped, as the resumed run evaluates those steps again."""
        rows = [r for r in read_metrics(path) if r["step"] <= upto]
        with io.StringIO(newline="") as buf:
            w = csv.writer(buf)
            w.writerow(METRIC_COLUMNS)
            for r in rows:
                w.writerow(_cell(r.get(c)) for c in METRIC_COLUMNS)
            write_text_atomic(path / METRICS, buf.getvalue())
        self = cls.__new__(cls)
        self.path = path
        self._file = open(path / METRICS, "a", newline="")
        self._csv = csv.writer(self._file)
        self.rows = rows
        config = json.loads((path / CONFIG).read_text())
        self._board = _board(path, purge_after=upto) if config.get("tensorboard") else None
        return self

    def log(self, row: dict[str, Any]) -> None:
        """Append one evaluation and flush it, so a crash loses at most the current interval."""
        self.rows.append(row)
        self._csv.writerow(_cell(row.get(c)) for c in METRIC_COLUMNS)
        self._file.flush()
        if self._board is not None:
            for column in METRIC_COLUMNS[2:]:
                if row.get(column) is not None:
                    tag = column.replace("_", "/", 1) if column.startswith(("train_", "val_")) else column
                    self._board.add_scalar(tag, row[column], row["step"])
            self._board.flush()

    def close(self) -> None:
        self._file.close()
        if self._board is not None:
            self._board.close()

    def finish(self, summary: dict[str, Any]) -> None:
        self.close()
        write_json_atomic(self.path / SUMMARY, summary)


TENSORBOARD = "tensorboard"


def _board(path: Path, purge_after: int | None = None):
    """A TensorBoard writer into the run's tensorboard/ folder; resumed, it hides what came after the checkpoint."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs TensorBoard: pip install 'grokrun[tensorboard]'") from None
    return SummaryWriter(str(path / TENSORBOARD), purge_step=None if purge_after is None else purge_after + 1)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def first_at(rows: list[dict[str, Any]], column: str, threshold: float) -> dict[str, Any] | None:
    """The first row whose ``column`` (val_acc, train_acc) reaches ``threshold``, or None."""
    return next((r for r in rows if r.get(column) is not None and r[column] >= threshold), None)


def metric_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps and wall-clock to each accuracy threshold, on validation and on the training set; the grokking delay
    at each (validation steps minus training steps, and their ratio, where both were reached); best val acc,
    min val loss and its step. The training set is scored more sparsely (``train_eval_every``), so its
    crossing, and the delay, are read on that coarser grid."""
    val = {f"{t:g}": first_at(rows, "val_acc", t) for t in THRESHOLDS}
    train = {f"{t:g}": first_at(rows, "train_acc", t) for t in THRESHOLDS}
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    losses = [(r["val_loss"], r["step"]) for r in rows if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    best_loss = min(losses, default=(None, None))
    delay = {k: ({"steps": val[k]["step"] - train[k]["step"],
                  "ratio": val[k]["step"] / train[k]["step"] if train[k]["step"] else None}
                 if val[k] and train[k] else None) for k in val}
    return {
        "steps_to_val_acc": {k: (r["step"] if r else None) for k, r in val.items()},
        "wall_s_to_val_acc": {k: (r["wall_s"] if r else None) for k, r in val.items()},
        "steps_to_train_acc": {k: (r["step"] if r else None) for k, r in train.items()},
        "wall_s_to_train_acc": {k: (r["wall_s"] if r else None) for k, r in train.items()},
        "grokking_delay": delay,
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
    return (path / CONFIG).is_file() and (path / METRICS).is_file()


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """The evaluations of a run directory, one dict per row.

    A last line without its line end was cut short (the run was killed while writing it): it is not data
    and is left out. Any other malformed row is a damaged file: ValueError naming the line.
    """
    file = path / METRICS
    lines = file.read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or "step" not in reader.fieldnames:
        raise ValueError(f"{file} has no header row with a step column")
    rows = []
    for raw in reader:
        try:
            if None in raw or None in raw.values():  # more or fewer cells than the header
                raise ValueError(f"{len(raw)} cells for {len(reader.fieldnames)} columns")
            row = {k: (float(v) if v != "" else None) for k, v in raw.items()}
            if row["step"] is None or not float(row["step"]).is_integer():
                raise ValueError(f"step {raw['step']!r} is not a whole number")
        except ValueError as e:
            raise ValueError(f"{file}, line {reader.line_num}: {e}") from None
        row["step"] = int(row["step"])
        rows.append(row)
    return rows


def read_run(path: Path) -> Run:
    path = Path(path)
    config = json.loads((path / CONFIG).read_text())
    summary_path = path / SUMMARY
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return Run(path, config, read_metrics(path), summary)


def find_runs(path: Path) -> tuple[list[Path], list[Path]]:
    """Every run directory at or under ``path``, in sorted order, and the folders skipped as not runs.

    A run directory is not searched further. A folder that neither is a run nor holds one is skipped
    (and reported once, not each folder inside it); hidden folders are ignored.
    """
    path = Path(path)
    if is_run_dir(path):
        return [path], []
    runs: list[Path] = []
    skipped: list[Path] = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found, skipped_inside = find_runs(sub)
        if found:
            runs += found
            skipped += skipped_inside
        else:
            skipped.append(sub)
    return runs, skipped


def load_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every run at or under each path, read; and a warning naming each folder skipped as not a run or
    each run whose files cannot be read. What compare and plot both start from."""
    found: list[Path] = []
    warnings = []
    for path in paths:
        runs, skipped = find_runs(path)
        found += runs
        warnings += [f"skipping {p}: not a run directory (it has no {CONFIG} and {METRICS})" for p in skipped]
    runs = []
    for path in dict.fromkeys(found):
        try:
            runs.append(read_run(path))
        except (OSError, ValueError, UnicodeDecodeError) as e:  # json and csv errors are ValueErrors
            warnings.append(f"skipping {path}: cannot read it ({e})")
    return runs, warnings


# Settings that name or place a run but do not change what it computes.
# where and how a run is written, not what it trains ("section.key" for a key inside a section)
OUTPUT_SETTINGS = ("out", "name", "tensorboard", "train.snapshots")
_NOT_VARIANT = ("seed", *OUTPUT_SETTINGS)


def without(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A saved config (nested by section) less ``keys``, top-level or "section.key"."""
    out = dict(config)
    for key in keys:
        section, _, name = key.rpartition(".")
        if not section:
            out.pop(key, None)
        elif isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != name}
    return out


def variant_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without its seed and location: runs that share it are seeds of one variant."""
    return without(config, _NOT_VARIANT)


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings whose values differ between two configs: key -> (value in a, value in b)."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)}


def first_difference(diff: dict[str, tuple[Any, Any]], prefer: tuple[str, ...] = ()) -> tuple[str, Any, Any, str]:
    """The difference a message names (the first of ``prefer`` present, else the first), its two values, and
    " (and N more settings)" when there are others."""
    key = next((k for k in prefer if k in diff), next(iter(diff)))
    more = f" (and {len(diff) - 1} more settings)" if len(diff) > 1 else ""
    return key, *diff[key], more


_SEED_SUFFIX = re.compile(r"-seed-?\d+(-\d+)?$")


def group_variants(runs: list[Run]) -> tuple[list[tuple[str, list[Run]]], list[str]]:
    """Runs grouped by variant (equal settings apart from seed), the baseline (filter none) first.

    A variant is named after its run directories without ``-seed<N>``; two variants with the same name
    get the settings that tell them apart. A second run of a seed is left out, with a warning.
    """
    groups: dict[str, list[Run]] = {}
    warnings = []
    for run in runs:
        key = json.dumps(variant_settings(run.config), sort_keys=True)
        group = groups.setdefault(key, [])
        twin = next((r for r in group if r.config.get("seed") == run.config.get("seed")), None)
        if twin is not None:
            warnings.append(f"skipping {run.path}: it repeats seed {run.config.get('seed')} of {twin.path}")
            continue
        group.append(run)
    ordered = sorted(groups.values(), key=lambda g: g[0].config.get("filter", {}).get("name") != "none")
    named: list[tuple[str, list[Run]]] = []
    for group in ordered:
        name = _SEED_SUFFIX.sub("", group[0].path.name) or group[0].path.name
        first = next((g for n, g in named if n.split(" [")[0] == name), None)
        if first is not None:
            diff = differences(variant_settings(first[0].config), variant_settings(group[0].config))
            name += " [" + ", ".join(f"{k}={v[1]}" for k, v in diff.items()) + "]"
        named.append((name, group))
    return named, warnings

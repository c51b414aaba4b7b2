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
from contextlib import contextmanager
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


def manifest_history(path: Path) -> tuple[list, list]:
    """A sweep's or comparison's manifest's ``seeds`` and ``commands`` so far ([] each where it is not there
    or unreadable), which the manifest written again keeps and extends."""
    try:
        stored = json.loads(path.read_text())
        return stored.get("seeds", []), stored.get("commands", [])
    except (OSError, ValueError, AttributeError):
        return [], []


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


LOCK = ".grokrun.lock"


@contextmanager
def in_use(folder: Path, what: str):
    """Hold ``folder`` for one command (``what``: "sweep", "comparison") while it runs: another one into the same
    folder is refused in one line. The lock is the operating system's (flock), so it goes with the process
    however it ends, kill -9 included; the file stays, naming the last holder."""
    import fcntl

    make_folder(folder)
    try:
        handle = open(folder / LOCK, "a+")
    except OSError as e:  # a read-only folder, one of another user's
        raise UserError(f"cannot write into {folder}: {e.strerror or e}; choose another --out") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another command"
        handle.close()
        raise UserError(f"{folder} is in use by {holder} still running; wait for it to end, or choose "
                        "another --out") from None
    handle.truncate(0)
    handle.write(f"a {what} (process {os.getpid()})")
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def free_name(out: Path, name: str) -> Path:
    """``out/name``, or ``out/name-2``, ``-3``... the first that does not exist yet (nothing is created)."""
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        if not path.exists():
            return path
    raise UserError(f"no free name under {out} for {name} (up to {name}-9999 exist)")


def reuse_or_new(root: Path, prefix: str, matches: Callable[[Path], bool]) -> tuple[Path, bool]:
    """The newest ``root/<prefix>-*`` folder that ``matches`` (a folder it cannot read does not), so the same
    command continues what it started; else a new ``root/<prefix>-<time>``. Returns (folder, whether found)."""
    import time

    for folder in sorted(root.glob(f"{prefix}-*"), reverse=True):
        try:
            if matches(folder):
                return folder, True
        except (OSError, ValueError, KeyError, TypeError):  # (UserError is a ValueError)
            continue
    base = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, i = base, 2
    while folder.exists():  # another one started within the same second
        folder, i = base.with_name(f"{base.name}-{i}"), i + 1
    return folder, False


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
    """Writes one run directory as training goes: config first, a metrics row per evaluation, summary last; and
    hands each row and the summary to the other ``sinks`` (grokrun.sinks: TensorBoard, W&B).

    ``extra``: columns after METRIC_COLUMNS that this run writes too (a task's own measures, a regularizer's
    penalty); a resumed run keeps its file's columns."""

    def __init__(self, path: Path, config: dict[str, Any], extra: tuple[str, ...] = (), sinks: list = ()):
        self.path, self.columns, self.sinks = path, [*METRIC_COLUMNS, *extra], list(sinks)
        write_json_atomic(path / CONFIG, config)
        self._file = open(path / METRICS, "w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(self.columns)
        self._file.flush()
        self.rows: list[dict[str, Any]] = []

    @classmethod
    def resume(cls, path: Path, upto: int) -> "RunWriter":
        """Continue a run's metrics.csv from its checkpoint at step ``upto``: rows after it (written
        before a crash, past the checkpoint) are dropped, as the resumed run evaluates those steps again.
        ``last_written``: the last step the file had before (what the run's sinks were given up to)."""
        written = read_metrics(path)
        rows = [r for r in written if r["step"] <= upto]
        header = next(csv.reader(io.StringIO((path / METRICS).read_text())), [])
        columns = [*METRIC_COLUMNS, *(c for c in header if c not in METRIC_COLUMNS)]
        with io.StringIO(newline="") as buf:
            w = csv.writer(buf)
            w.writerow(columns)
            for r in rows:
                w.writerow(_cell(r.get(c)) for c in columns)
            write_text_atomic(path / METRICS, buf.getvalue())
        self = cls.__new__(cls)
        self.path, self.columns = path, columns
        self._file = open(path / METRICS, "a", newline="")
        self._csv = csv.writer(self._file)
        self.rows = rows
        self.last_written = int(written[-1]["step"]) if written else None
        self.sinks = []  # (the engine opens them: grokrun.sinks.open_sinks)
        return self

    def log(self, row: dict[str, Any]) -> None:
        """Append one evaluation and flush it, so a crash loses at most the current interval."""
        self.rows.append(row)
        self._csv.writerow(_cell(row.get(c)) for c in self.columns)
        self._file.flush()
        if self.sinks:
            logged = {c: row.get(c) for c in self.columns}
            for sink in self.sinks:
                sink.log(logged)

    def close(self) -> None:
        self._file.close()
        for sink in self.sinks:
            sink.close()

    def finish(self, summary: dict[str, Any]) -> None:
        self._file.close()
        write_json_atomic(self.path / SUMMARY, summary)
        for sink in self.sinks:
            sink.finish(summary)
            sink.close()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def first_at(rows: list[dict[str, Any]], column: str, threshold: float) -> dict[str, Any] | None:
    """The first row whose ``column`` (val_acc, train_acc) reaches ``threshold``, or None."""
    return next((r for r in rows if r.get(column) is not None and r[column] >= threshold), None)


def first_below(rows: list[dict[str, Any]], column: str, target: float) -> dict[str, Any] | None:
    """The first row whose ``column`` (val_loss) is below ``target`` (--stop-at-loss), or None."""
    return next((r for r in rows if r.get(column) is not None and r[column] < target), None)


def metric_summary(rows: list[dict[str, Any]], asked: tuple[float | None, ...] = (),
                   loss_targets: tuple[float | None, ...] = ()) -> dict[str, Any]:
    """Steps and wall-clock to each accuracy threshold (THRESHOLDS and those ``asked`` for, such as the run's
    --stop-at-acc), on validation and on the training set; the grokking delay at each (validation steps minus
    training steps, and their ratio, where both were reached); best val acc, min val loss and its step. The
    training set is scored more sparsely (``train_eval_every``), so its crossing, and the delay, are read on
    that coarser grid. ``loss_targets``: validation-loss targets (--stop-at-loss), whose first evaluation below each
    is ``steps_to_val_loss`` (present only where one was asked for)."""
    thresholds = sorted({*THRESHOLDS, *(t for t in asked if t is not None)})
    val = {f"{t:g}": first_at(rows, "val_acc", t) for t in thresholds}
    train = {f"{t:g}": first_at(rows, "train_acc", t) for t in thresholds}
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    losses = [(r["val_loss"], r["step"]) for r in rows if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    best_loss = min(losses, default=(None, None))
    delay = {k: ({"steps": val[k]["step"] - train[k]["step"],
                  "ratio": val[k]["step"] / train[k]["step"] if train[k]["step"] else None}
                 if val[k] and train[k] else None) for k in val}
    targets = sorted({t for t in loss_targets if t is not None})
    below = {f"{t:g}": first_below(rows, "val_loss", t) for t in targets}
    return {
        **({"steps_to_val_loss": {k: (r["step"] if r else None) for k, r in below.items()},
            "wall_s_to_val_loss": {k: (r["wall_s"] if r else None) for k, r in below.items()}} if below else {}),
        "steps_to_val_acc": {k: (r["step"] if r else None) for k, r in val.items()},
        "wall_s_to_val_acc": {k: (r["wall_s"] if r else None) for k, r in val.items()},
        "steps_to_train_acc": {k: (r["step"] if r else None) for k, r in train.items()},
        "wall_s_to_train_acc": {k: (r["wall_s"] if r else None) for k, r in train.items()},
        "grokking_delay": delay,
        "best_val_acc": max(accs, default=None),
        "min_val_loss": best_loss[0],
        "min_val_loss_step": best_loss[1],
    }


def add_thresholds(run_dir: Path, thresholds: tuple[float, ...]) -> None:
    """Put the thresholds a compare or a sweep asked for (--threshold) into a finished run's summary.json maps,
    read from its metrics.csv as the engine reads its own; a run without a readable summary is left alone."""
    path = Path(run_dir) / SUMMARY
    try:
        summary = json.loads(path.read_text())
        have = summary["steps_to_val_acc"]
        if all(f"{t:g}" in have for t in thresholds):
            return
        found = metric_summary(read_metrics(Path(run_dir)), asked=(*map(float, have), *thresholds))
    except (OSError, ValueError, KeyError, TypeError):
        return
    for key in ("steps_to_val_acc", "wall_s_to_val_acc", "steps_to_train_acc", "wall_s_to_train_acc",
                "grokking_delay"):
        summary[key] = found[key]
    write_json_atomic(path, summary)


# --- reading -------------------------------------------------------------------------------------------


# Settings that name or place a run but do not change what it computes.
# where and how a run is written, not what it trains ("section.key" for a key inside a section)
OUTPUT_SETTINGS = ("out", "name", "tensorboard", "wandb", "wandb_project", "wandb_group", "train.snapshots")


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

"""Where a run's rows, config and summary go besides its own files (metrics.csv, config.json and summary.json,
written by grokrun.results.RunWriter, the first sink): TensorBoard (``--tensorboard``) and Weights & Biases
(``--wandb``). Each is a ``Sink``; RunWriter hands every row to each one it was configured with.

    check(cfg)                              # at config time: the package, the project name, a login or offline
    sinks = open_sinks(run_dir, config)     # [TensorBoard(...), WandB(...)], each behind Guarded
    sinks = open_sinks(run_dir, config, resumed_at=1200, logged_upto=1350)

A sink that fails while the run trains says so in one line and stops; the run and its CSV go on. Nothing here
imports torch, tensorboard or wandb until a sink is opened.
"""

from __future__ import annotations

import importlib.util
import json
import netrc
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Protocol

from grokrun.errors import UserError

TENSORBOARD = "tensorboard"  # the run directory's folder of event files
WANDB = "wandb"  # the run directory's folder of W&B's own files (offline runs: wandb sync RUN_DIR/wandb/offline-*)
NEEDS_TENSORBOARD = "--tensorboard needs TensorBoard: pip install 'grokrun[tensorboard]'"
WANDB_RUN = "wandb.json"  # the run's W&B id, project and group: a resume continues that W&B run
_BAD_PROJECT_CHARS = set("/\\#?%:\r\n")  # W&B's rule for project names (and at most 128 characters)


class Sink(Protocol):
    def log(self, row: dict[str, Any]) -> None:
        """One evaluation's row (step, wall_s and the metric columns; None where not measured)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's summary.json, as it ends."""

    def close(self) -> None:
        """The run ends without a summary (stopped at once) or after finish."""


def check(cfg) -> None:
    """Refuse, before anything trains, a sink that cannot work: its package missing, a project name W&B
    refuses, or W&B online without a login."""
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError(NEEDS_TENSORBOARD)
    if not cfg.wandb:
        return
    if importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb needs Weights & Biases: pip install 'grokrun[wandb]'")
    project = cfg.wandb_project
    if not project or len(project) > 128 or _BAD_PROJECT_CHARS & set(project):
        raise UserError(f"--wandb-project {project!r} is not a W&B project name: 1 to 128 characters, none of "
                        "/ \\ # ? % :")
    if _wandb_mode() == "online" and not _logged_in():
        raise UserError("--wandb needs a W&B login (wandb login, or WANDB_API_KEY) or WANDB_MODE=offline "
                        "(then wandb sync later)")


def _wandb_mode() -> str:
    mode = os.environ.get("WANDB_MODE", "online").lower()
    return {"dryrun": "offline", "disabled": "disabled"}.get(mode, mode)


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def open_sinks(path: Path, config: dict[str, Any], resumed_at: int | None = None,
               logged_upto: int | None = None) -> list[Sink]:
    """The sinks a run's config asks for. Resumed (``resumed_at``: the checkpoint's step), TensorBoard hides
    what came after it, and W&B continues the same run, skipping the rows up to ``logged_upto`` that it
    already has (an exact resume evaluates them again to the same numbers)."""
    sinks: list[Sink] = []
    wanted = [("TensorBoard", lambda: TensorBoard(path, resumed_at)) if config.get("tensorboard") else None,
              ("W&B", lambda: WandB(path, config, logged_upto if resumed_at is not None else None))
              if config.get("wandb") else None]
    for name, make in filter(None, wanted):
        try:
            sinks.append(Guarded(name, make()))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (before the run trains: refused, in one line)
            for sink in sinks:
                sink.close()
            raise UserError(f"{name} could not start for {path} ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]})") from None
    return sinks


class Guarded:
    """A sink whose failure ends that sink only: one line on stderr, then it is skipped."""

    def __init__(self, name: str, sink: Sink):
        self.name, self.sink = name, sink

    def _call(self, method: str, *args) -> None:
        if self.sink is None:
            return
        try:
            getattr(self.sink, method)(*args)
        except Exception as e:  # noqa: BLE001 (whatever a tracker raises, the run goes on)
            what = {"log": "this run", "finish": "this run's summary", "close": "this run as it closed"}[method]
            print(f"warning: {self.name} stopped logging {what} ({type(e).__name__}: "
                  f"{' '.join(str(e).split())[:160]}); metrics.csv goes on", file=sys.stderr)
            self.sink = None

    def log(self, row: dict[str, Any]) -> None:
        self._call("log", row)

    def finish(self, summary: dict[str, Any]) -> None:
        self._call("finish", summary)

    def close(self) -> None:
        self._call("close")


def _tag(column: str) -> str:
    return column.replace("_", "/", 1) if column.startswith(("train_", "val_")) else column


class TensorBoard:
    """Scalars in the run's tensorboard/ folder, one per metric column ("val/acc"); resumed, it hides what came
    after the checkpoint."""

    def __init__(self, path: Path, resumed_at: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(NEEDS_TENSORBOARD) from None
        self.board = SummaryWriter(str(path / TENSORBOARD), purge_step=None if resumed_at is None else resumed_at + 1)

    def log(self, row: dict[str, Any]) -> None:
        for column, value in row.items():
            if column not in ("step", "wall_s") and value is not None:
                self.board.add_scalar(_tag(column), value, row["step"])
        self.board.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.board.close()


class WandB:
    """One W&B run per grokrun run (stacked seeds too), named after its run directory, in ``wandb_project``,
    grouped by ``wandb_group`` or else by the sweep or comparison folder it belongs to; its config is
    config.json, its rows metrics.csv's at W&B step = the training step, its summary summary.json's (one
    level, "steps_to_val_acc.0.95"). A resume continues it (the id is kept in wandb.json)."""

    def __init__(self, path: Path, config: dict[str, Any], logged_upto: int | None):
        import wandb

        from grokrun.results import flatten, write_json_atomic

        self.flatten, self.skip_upto = flatten, logged_upto
        saved = _saved_run(path) if logged_upto is not None else None
        group = config.get("wandb_group") or _folder_group(path)
        ident = saved["id"] if saved else secrets.token_hex(4)  # (W&B's own ids: 8 lowercase letters and digits)
        write_json_atomic(path / WANDB_RUN, {"id": ident, "project": config.get("wandb_project"), "group": group})
        self.run = wandb.init(project=config.get("wandb_project"), group=group or None, name=path.name, id=ident,
                              resume="allow", dir=str(path), config=config, reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))

    def log(self, row: dict[str, Any]) -> None:
        if self.skip_upto is not None and row["step"] <= self.skip_upto:
            return
        self.run.log({k: v for k, v in row.items() if v is not None and k != "step"}, step=int(row["step"]))

    def finish(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(self.flatten(summary))

    def close(self) -> None:
        self.run.finish()


def _saved_run(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / WANDB_RUN).read_text())
    except (OSError, ValueError):
        return None


def _folder_group(path: Path) -> str:
    """The sweep's or comparison's folder name, for the runs in one; "" for a run of its own."""
    from grokrun.results import SWEEP_MANIFEST

    parent = path.parent
    return parent.name if (parent / SWEEP_MANIFEST).is_file() or (parent / "compare.json").is_file() else ""

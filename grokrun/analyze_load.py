"""A run read back for ``grokrun analyze``: its config held against the settings its checkpoint keeps, its task
rebuilt (data and model, on the CPU) and its weight snapshots loaded and checked to fit.

    cfg, task, steps, states = load_run(Path("results/nanda"))
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from grokrun import snapshots
from grokrun.errors import UserError
from grokrun.results import CONFIG


def load_run(run_dir: Path):
    """The run's config, its task (data and a model to load snapshots into) and its snapshot steps."""
    from grokrun.config import resolve
    from grokrun.models import add_lora
    from grokrun.tasks import task

    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {run_dir / CONFIG}: {e}") from None
    if saved.get("task") != "modular":
        raise UserError(f"{run_dir} is a {saved.get('task')} run; grokrun analyze reads modular runs")
    cfg = resolve(saved, {})
    steps = snapshots.saved_steps(run_dir)
    if not steps:
        raise UserError(f"{run_dir} has no weight snapshots; train it with --snapshots log (the modular "
                        "default since snapshots exist) and analyze that run")
    _check_unedited(run_dir, cfg)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    torch.manual_seed(cfg.seed)
    t = task("modular").build(cfg, torch.device("cpu"), dtype)
    if cfg.model.lora_rank:
        add_lora(t.model, cfg.model.lora_rank, cfg.model.lora_alpha)
    t.model.eval()
    return cfg, t, steps, [_snapshot(run_dir, step, t.model) for step in steps]


def _check_unedited(run_dir: Path, cfg) -> None:
    """UserError if config.json no longer says what the run trained with (its checkpoint keeps the settings):
    the snapshots would be read as another model, or scored on another table."""
    from grokrun import checkpoint, resume
    from grokrun.results import CHECKPOINT
    from grokrun.runs import differences, first_difference

    if not (run_dir / CHECKPOINT).is_file():
        return  # (a run stopped before its first checkpoint: nothing to hold the config against)
    trained = checkpoint.load(run_dir).get("settings")
    diff = {} if trained is None else differences(resume.completed(trained), resume.resumable_settings(cfg))
    if diff:
        key, was, now, more = first_difference(diff, prefer=("task", "modular.op", "modular.p"))
        raise UserError(f"{run_dir / CONFIG} says {key} = {now!r}, but the run trained with {was!r}{more}; analyze "
                        f"reads a run as it was trained (restore {CONFIG})")


def _snapshot(run_dir: Path, step: int, model: torch.nn.Module) -> dict[str, Tensor]:
    """One snapshot's weights, checked to load into the run's model (UserError naming the file if not)."""
    path = snapshots.path(run_dir, step)
    try:
        state = snapshots.load(run_dir, step)
        model.load_state_dict(state)
    except Exception as e:  # a truncated or foreign file, or weights of another shape: unpickling fails many ways
        why = " ".join(str(e).split())[:120]
        raise UserError(f"cannot read {path} as this run's weights ({type(e).__name__}: {why}); delete it, or "
                        "train the run again") from None
    return state

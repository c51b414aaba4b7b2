"""Checkpoints: everything a run needs to continue as if it had never stopped.

    save(run_dir, state); state = load(run_dir)

Model, optimizer, scheduler, filter, every random generator, the batch order's position, the step,
the training time so far and the step timings; the data's fingerprint, so a resume on other data is
refused. Written to a temporary file and renamed: a checkpoint on disk is always a whole one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from grokrun.errors import UserError
from grokrun.results import CHECKPOINT, CONFIG, atomic_write

VERSION = 1


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(run_dir: Path, state: dict[str, Any]) -> None:
    """The run's checkpoint, written atomically: a checkpoint on disk is always a whole one."""
    atomic_write(Path(run_dir) / CHECKPOINT, lambda f: torch.save({"version": VERSION, **state}, f))


def step_of(run_dir: Path) -> int:
    """The step of a run's checkpoint, read without loading its tensors; UserError as ``load``."""
    path = Path(run_dir) / CHECKPOINT
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["step"])
    except Exception:  # missing or damaged: load names the problem
        return load(run_dir)["step"]


def load(run_dir: Path) -> dict[str, Any]:
    """The run's checkpoint, or UserError naming what is wrong with it."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"{run_dir} has no {CHECKPOINT} (it stopped before its first checkpoint); "
                        f"start it again with grokrun train --config {Path(run_dir) / CONFIG}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("version") != VERSION:
            raise ValueError("not a grokrun checkpoint")
    except Exception as e:  # a truncated or foreign file: unpickling can fail in many ways
        why = " ".join(str(e).split())[:80]
        raise UserError(f"cannot read {path} ({type(e).__name__}: {why}); it is damaged: delete "
                        f"the run directory and start again") from None
    return state

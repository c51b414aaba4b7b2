"""Model weights saved during training, for looking inside a run afterwards (grokrun analyze).

    --snapshots log     up to 30 steps, log-spaced from 0 to the budget, each at the evaluation at or after it
                        (the modular task's default; it adds no point where the loop waits for the device)
    --snapshots 500     every 500 steps, and step 0 and the budget's last
    --snapshots off     none (every other task's default)

One file per snapshot, ``<run>/snapshots/step-000001234.pt``: the model's state_dict on the CPU, written
once, atomically, when the step is reached (so a run stopped early keeps the snapshots it reached); a resumed
run writes again those after its checkpoint. Which steps: grokrun.engine.schedules.snapshot_steps.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

FOLDER = "snapshots"
_NAME = re.compile(r"step-(\d+)\.pt")


def path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step-{step:09d}.pt"


def save(run_dir: Path, step: int, state: dict[str, Tensor]) -> None:
    import torch

    from grokrun.results import atomic_write

    target = path(run_dir, step)
    target.parent.mkdir(exist_ok=True)
    cpu = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    # (not fsynced: a snapshot lost to a power cut is not worth a wait for the disk at each of them)
    atomic_write(target, lambda f: torch.save({"step": step, "model": cpu}, f), durable=False)


def saved_steps(run_dir: Path) -> list[int]:
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(int(m[1]) for f in folder.iterdir() if (m := _NAME.fullmatch(f.name)))


def load(run_dir: Path, step: int) -> dict[str, Tensor]:
    import torch

    return torch.load(path(run_dir, step), map_location="cpu", weights_only=True)["model"]


def discard_after(run_dir: Path, step: int) -> None:
    """A resumed run forgets the snapshots its previous life wrote after its checkpoint (they come again)."""
    for s in saved_steps(run_dir):
        if s > step:
            path(run_dir, s).unlink(missing_ok=True)

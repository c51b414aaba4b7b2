"""Model weights saved during training, for looking inside a run afterwards (grokrun analyze).

    --snapshots log     up to 30 steps, log-spaced from 0 to the budget, each at the evaluation at or after it
                        (the modular task's default; it adds no point where the loop waits for the device)
    --snapshots 500     every 500 steps, and step 0 and the budget's last
    --snapshots off     none (every other task's default)

One file per snapshot, ``<run>/snapshots/step-000001234.pt``: the model's state_dict on the CPU, written
once, atomically, when the step is reached (so a run stopped early keeps the snapshots it reached); a resumed
run writes again those after its checkpoint.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from pathlib import Path
from typing import TYPE_CHECKING

from grokrun.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

FOLDER = "snapshots"
LOG_POINTS = 30
_NAME = re.compile(r"step-(\d+)\.pt")


class _Every:
    """Step 0, every ``every`` steps and ``last``: a membership test by arithmetic (a long budget costs nothing)."""

    def __init__(self, every: int, last: int):
        self.every, self.last = every, last

    def __contains__(self, step: int) -> bool:
        return 0 <= step <= self.last and (step % self.every == 0 or step == self.last)


def steps(spec: str, max_steps: int) -> set[int] | _Every:
    """The steps a spec names, within 0..max_steps; a bad spec is one line naming the choices."""
    if spec == "off":
        return set()
    if spec == "log":
        # step 0, then at least LOG_POINTS - 1 distinct steps about evenly spaced in log(step) from 1 to the
        # budget: more points are drawn until rounding no longer merges away the first ones, a step apart
        want = min(LOG_POINTS - 1, max_steps)
        n, out = max(2, want), set()
        while len(out) < want:
            out = {round(max_steps ** (i / (n - 1))) for i in range(n)}
            n += 1
        return {0} | out
    try:
        every = int(spec)
    except ValueError:
        every = 0
    if every < 1:
        raise UserError(f"--snapshots must be log, off or a number of steps >= 1, got {spec!r}")
    return _Every(every, max_steps)


def on_evaluations(wanted: set[int], evals) -> set[int]:
    """Each wanted step moved to the first evaluation step at or after it (``evals``: engine.EverySteps or a set,
    holding the budget's last step), so that log snapshots add no point where the loop waits for the device."""
    if hasattr(evals, "every"):
        return {0} | {min(math.ceil(s / evals.every) * evals.every, evals.last) for s in wanted if s > 0}
    ordered = sorted(evals)
    return {0} | {ordered[min(bisect_left(ordered, s), len(ordered) - 1)] for s in wanted if s > 0}


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

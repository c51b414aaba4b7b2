"""Which steps of a run evaluate, checkpoint and snapshot its weights: sets of steps, or ``EverySteps``.

    evals = eval_steps(cfg.train, steps_per_epoch)        # step in evals
    snaps = snapshot_steps("log", 10_000)                  # {0, 1, 2, 3, 5, ...}

Importing this module does not import torch (config checks a --snapshots spec with it).
"""

from __future__ import annotations

import math
from bisect import bisect_left

from grokrun.errors import UserError

SNAPSHOT_LOG_POINTS = 30


class EverySteps:
    """Every ``every`` steps from ``first`` up to ``last``, and ``last`` itself: a membership test by arithmetic,
    so a long budget costs no memory. ``first=0`` adds step 0 (snapshots: the initial weights). Iterates in
    order, like the sets the log schedules give."""

    def __init__(self, every: int, last: int, first: int = 1):
        self.every, self.last, self.first = every, last, first

    def __contains__(self, step: int) -> bool:
        return self.first <= step <= self.last and (step % self.every == 0 or step == self.last)

    def __iter__(self):
        start = self.first if self.first % self.every == 0 else self.every * math.ceil(self.first / self.every)
        yield from range(start, self.last + 1, self.every)
        if self.last % self.every:
            yield self.last


def eval_steps(cfg, steps_per_epoch: int) -> EverySteps | set[int]:
    """The steps after which to evaluate (besides step 0, before training); always the last one.

    linear: every ``eval_every`` steps (0: once per epoch). log: every step below 30, every 10th below
    150, then ``eval_points`` steps spaced evenly in log(step) from 150 to the budget, as Omnigrok's
    MNIST script is read on a log axis: fine where grokking usually happens, sparse later.
    """
    n = cfg.max_steps
    if cfg.eval_schedule == "linear":
        return EverySteps(cfg.eval_every or steps_per_epoch, n)
    steps = set(range(1, 30)) | set(range(30, 150, 10))
    if n > 150:
        steps |= {round(150 * (n / 150) ** (i / (cfg.eval_points - 1))) for i in range(cfg.eval_points)}
    return {s for s in steps if s <= n} | {n}


def checkpoint_steps(cfg) -> EverySteps:
    """Every ``checkpoint_every`` steps (0: every 10% of the budget), and the last."""
    return EverySteps(cfg.checkpoint_every or max(1, cfg.max_steps // 10), cfg.max_steps)


def snapshot_steps(spec: str, max_steps: int) -> set[int] | EverySteps:
    """The steps a --snapshots spec names, within 0..max_steps; a bad spec is one line naming the choices.

    log: step 0, then at least 29 distinct steps about evenly spaced in log(step) from 1 to the budget (more
    points are drawn until rounding no longer merges away the first ones, a step apart). N: step 0, every N
    steps and the last. off: none.
    """
    if spec == "off":
        return set()
    if spec == "log":
        want = min(SNAPSHOT_LOG_POINTS - 1, max_steps)
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
    return EverySteps(every, max_steps, first=0)


def on_evaluations(wanted: set[int], evals: EverySteps | set[int]) -> set[int]:
    """Each wanted step moved to the first evaluation step at or after it (``evals`` holds the budget's last
    step), so that log snapshots add no point where the loop waits for the device."""
    if isinstance(evals, EverySteps):
        return {0} | {min(math.ceil(s / evals.every) * evals.every, evals.last) for s in wanted if s > 0}
    ordered = sorted(evals)
    return {0} | {ordered[min(bisect_left(ordered, s), len(ordered) - 1)] for s in wanted if s > 0}


def run_snapshot_steps(cfg, evals: EverySteps | set[int]) -> set[int] | EverySteps:
    """A run's snapshot steps: log ones moved onto evaluations."""
    steps = snapshot_steps(cfg.snapshots, cfg.max_steps)
    return on_evaluations(steps, evals) if cfg.snapshots == "log" else steps

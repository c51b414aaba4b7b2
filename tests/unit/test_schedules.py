"""Which steps evaluate, checkpoint and snapshot (grokrun.engine.schedules): one EverySteps for all three."""

import pytest

from grokrun.config import resolve
from grokrun.engine.schedules import (SNAPSHOT_LOG_POINTS, EverySteps, checkpoint_steps, eval_steps, on_evaluations,
                                      run_snapshot_steps, snapshot_steps)
from grokrun.errors import UserError


def test_every_steps_is_arithmetic_and_iterates_in_order():
    every = EverySteps(10, 95)
    assert list(every) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert all(s in every for s in every) and 0 not in every and 11 not in every and 100 not in every
    with_zero = EverySteps(500, 1_234, first=0)
    assert list(with_zero) == [0, 500, 1_000, 1_234] and 0 in with_zero
    assert 10**9 in EverySteps(7, 10**9)  # membership by arithmetic: no set of a billion steps


def test_snapshot_steps():
    log = snapshot_steps("log", 10_000)
    assert SNAPSHOT_LOG_POINTS <= len(log) <= SNAPSHOT_LOG_POINTS + 1 and min(log) == 0 and max(log) == 10_000
    assert snapshot_steps("log", 5) == {0, 1, 2, 3, 4, 5}
    every = snapshot_steps("500", 1_234)
    assert all(s in every for s in (0, 500, 1_000, 1_234)) and 499 not in every and 1_500 not in every
    assert snapshot_steps("off", 100) == set()
    assert 10**9 in snapshot_steps("7", 10**9)
    with pytest.raises(UserError, match="--snapshots must be log, off or a number of steps >= 1, got 'often'"):
        snapshot_steps("often", 100)


def test_log_snapshots_move_onto_evaluations():
    assert on_evaluations({0, 1, 2, 9, 10, 11, 95}, EverySteps(10, 95)) == {0, 10, 20, 95}
    assert on_evaluations({1, 5, 40}, {3, 30, 50}) == {0, 3, 30, 50}
    cfg = resolve(None, {"task": "modular", "train.max_steps": 1_000, "train.eval_every": 100})
    assert cfg.train.snapshots == "log"  # the modular task's default
    assert run_snapshot_steps(cfg.train, eval_steps(cfg.train, 2)) <= {0, *range(100, 1_001, 100)}


def test_evaluations_linear_and_log():
    cfg = resolve(None, {"task": "modular", "train.max_steps": 95, "train.eval_every": 10})
    assert list(eval_steps(cfg.train, steps_per_epoch=4)) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    per_epoch = resolve(None, {"task": "modular", "train.max_steps": 9})
    assert list(eval_steps(per_epoch.train, steps_per_epoch=4)) == [4, 8, 9]
    log = eval_steps(resolve(None, {"task": "mnist", "train.max_steps": 100_000}).train, steps_per_epoch=5)
    assert set(range(1, 30)) <= log and 35 not in log and 40 in log and max(log) == 100_000


def test_checkpoints_every_tenth_of_the_budget_by_default_and_at_the_end():
    cfg = resolve(None, {"task": "modular", "train.max_steps": 1_005})
    assert list(checkpoint_steps(cfg.train)) == [*range(100, 1_001, 100), 1_005]
    cfg = resolve(None, {"task": "modular", "train.max_steps": 7, "train.checkpoint_every": 3})
    assert list(checkpoint_steps(cfg.train)) == [3, 6, 7]

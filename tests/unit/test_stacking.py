"""Seeds trained together as one stacked model: each seed exactly as it runs alone.

In float64, ``--seeds 0,1,2`` must write the metrics.csv files that ``--seed 0``, ``--seed 1`` and ``--seed 2``
write alone, value for value to 1e-9 relative: the stack changes only the order of a few floating-point sums.
"""

import csv
import json
import os
import shutil
import signal

import pytest
import torch

from fakedata import synthetic_mnist

SMALL_MODULAR = ["--task", "modular", "--op", "add", "--p", "11", "--train-frac", "0.8", "--width", "32", "--layers", "1",
                 "--heads", "2", "--batch-size", "32", "--eval-every", "4"]
FLOAT64 = ["--dtype", "float64", "--quiet"]


def metrics(run_dir):
    """metrics.csv as rows of floats (None for an empty cell), wall-clock dropped: it is the one column that
    must differ."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: None if v == "" else float(v) for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def assert_same_metrics(a, b, rel=1e-9):
    rows_a, rows_b = metrics(a), metrics(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        for key in ra:
            if ra[key] is None or rb[key] is None:
                assert ra[key] == rb[key], (ra["step"], key)
            else:
                assert ra[key] == pytest.approx(rb[key], rel=rel, abs=1e-300), (ra["step"], key, ra[key], rb[key])


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def together_and_alone(cli, tmp_path, args, seeds=(0, 1, 2)):
    """Train ``seeds`` together and each alone with the same flags; return (together dirs, alone dirs). Exit
    status 1 (a diverged run) is let through: the callers check each run's status."""
    spec = ",".join(map(str, seeds))
    result = cli(["train", *args, "--seeds", spec, "--out", str(tmp_path / "together"), "--name", "stack", *FLOAT64])
    assert result.exit_code in (0, 1), result.output
    together = [tmp_path / "together" / "stack" / f"seed{s}" for s in seeds]
    alone = []
    for s in seeds:
        result = cli(["train", *args, "--seed", s, "--out", str(tmp_path / "alone"), "--name", f"seed{s}", *FLOAT64])
        assert result.exit_code in (0, 1), result.output
        alone.append(tmp_path / "alone" / f"seed{s}")
    return together, alone


@pytest.mark.parametrize("args", [
    pytest.param([*SMALL_MODULAR, "--filter", "ema"], id="modular-ema"),
    pytest.param([*SMALL_MODULAR, "--filter", "ma"], id="modular-ma"),  # the window fills at step 100
])
def test_modular_seeds_together_write_the_metrics_of_seeds_alone(cli, tmp_path, args):
    together, alone = together_and_alone(cli, tmp_path, [*args, "--max-steps", "200"])
    assert all(summary(t)["status"] == "completed" for t in together)
    for t, a in zip(together, alone):
        assert_same_metrics(t, a)
        assert summary(t)["trained_with"] == 3 and "trained_with" not in summary(a)
        assert summary(t)["seed"] == summary(a)["seed"]
    assert metrics(together[0]) != metrics(together[1])  # seeds differ: not one run written three times


@pytest.mark.slow
def test_mnist_seeds_together_write_the_metrics_of_seeds_alone(cli, tmp_path):
    data = synthetic_mnist(tmp_path / "data")
    args = ["--task", "mnist", "--data-dir", data, "--no-download", "--train-points", "200",
            "--filter", "ema", "--max-steps", "200"]
    together, alone = together_and_alone(cli, tmp_path, args)
    for t, a in zip(together, alone):
        assert_same_metrics(t, a)
    # It learns (seed 0: 0.445 at step 200; chance is 0.1), so the numbers compared mean something.
    assert summary(together[0])["best_val_acc"] > 0.3


def test_a_seed_that_stops_early_leaves_the_others_unchanged(cli, tmp_path):
    # Seed 0 crosses 10% validation accuracy within 200 steps; seeds 1 and 2 do not (checked below).
    args = [*SMALL_MODULAR, "--filter", "ema", "--max-steps", "200", "--stop-at-acc", "0.1"]
    together, alone = together_and_alone(cli, tmp_path, args)
    statuses = [(summary(t)["status"], summary(t)["steps"]) for t in together]
    assert statuses[0][0] == "stopped_at_target" and statuses[0][1] < 200
    assert statuses[1:] == [("completed", 200)] * 2
    for t, a in zip(together, alone):
        assert_same_metrics(t, a)
        assert summary(t)["status"] == summary(a)["status"] and summary(t)["steps"] == summary(a)["steps"]
    assert (together[0] / "checkpoint.pt").is_file()  # finished as a run alone would: resumable state at its end


def middle_seed_nan_at_step_7(monkeypatch):
    """The middle of three stacked seeds gets a NaN loss at step 7 (a real divergence is chaotic)."""
    from grokrun.stacking import Stacked

    calls = {"n": 0}
    original = Stacked.losses

    def losses(self, idx):
        calls["n"] += 1
        values = original(self, idx)
        if calls["n"] == 7:
            values = values + torch.tensor([0.0, float("nan"), 0.0], dtype=values.dtype)
        return values

    monkeypatch.setattr(Stacked, "losses", losses)


def test_a_seed_that_diverges_ends_alone_and_the_others_go_on(cli, tmp_path, monkeypatch):
    # A real divergence is chaotic (a run that explodes amplifies rounding differences a thousandfold per step),
    # so the middle seed's loss is made NaN at step 7 instead: the loop must see it, end that seed as diverged
    # and train the other two exactly as alone.
    middle_seed_nan_at_step_7(monkeypatch)
    args = [*SMALL_MODULAR, "--filter", "ema", "--max-steps", "40", "--checkpoint-every", "5"]
    together, alone = together_and_alone(cli, tmp_path, args)
    assert [(summary(t)["status"], summary(t)["diverged_at"]) for t in together] == \
        [("completed", None), ("diverged", 7), ("completed", None)]
    assert [r["step"] for r in metrics(together[1])] == [0, 4, 8]  # seen at the next evaluation, then no more
    assert torch.load(together[1] / "checkpoint.pt", weights_only=False)["step"] == 5  # the last good one stays
    for s in (0, 2):
        assert_same_metrics(together[s], alone[s])


def test_a_seed_that_diverges_takes_no_snapshot_after_it(cli, tmp_path, monkeypatch):
    """With a snapshot at every step, the seed made NaN at step 7 keeps its snapshots up to step 6; the others
    keep every step's, and seed 2's last snapshot equals that of seed 2 trained alone."""
    from grokrun import snapshots
    from grokrun.stacking import Stacked

    original = Stacked.losses
    middle_seed_nan_at_step_7(monkeypatch)
    result = cli(["train", *SMALL_MODULAR, "--max-steps", "10", "--snapshots", "1", "--seeds", "0-2",
                  "--out", tmp_path, "--name", "stack", *FLOAT64])
    assert result.exit_code == 1, result.output
    runs = [tmp_path / "stack" / f"seed{s}" for s in range(3)]
    assert snapshots.saved_steps(runs[1]) == list(range(7))
    assert snapshots.saved_steps(runs[0]) == snapshots.saved_steps(runs[2]) == list(range(11))
    monkeypatch.setattr(Stacked, "losses", original)
    alone = cli(["train", *SMALL_MODULAR, "--max-steps", "10", "--snapshots", "1", "--seed", "2",
                 "--out", tmp_path, "--name", "alone", *FLOAT64])
    assert alone.exit_code == 0, alone.output
    a, b = snapshots.load(runs[2], 10), snapshots.load(tmp_path / "alone", 10)
    assert all(torch.allclose(a[k], b[k], rtol=1e-9, atol=1e-9) for k in a), max((a[k] - b[k]).abs().max() for k in a)


def interrupt_at_step(monkeypatch, step):
    """Ctrl-C during ``step`` (the filter runs once per step, for all seeds together)."""
    from grokrun.filters import GradFilter

    calls = {"n": 0}
    original = GradFilter.apply

    def apply(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(GradFilter, "apply", apply)
    return original


def test_interrupted_seeds_resume_together_as_if_never_stopped(cli, tmp_path, monkeypatch):
    args = ["train", *SMALL_MODULAR, "--filter", "ema", "--max-steps", "60", "--seeds", "0-2", *FLOAT64]
    assert cli([*args, "--out", tmp_path / "whole"]).exit_code == 0

    original = interrupt_at_step(monkeypatch, 23)
    result = cli([*args, "--out", tmp_path / "cut"])
    assert result.exit_code == 130, result.output
    folder = tmp_path / "cut" / "modular-ema-seeds0-2"
    assert f"continue with: grokrun train --resume {folder}" in result.stdout
    for s in range(3):
        assert summary(folder / f"seed{s}")["status"] == "interrupted"
        assert summary(folder / f"seed{s}")["steps"] == 23
    shutil.copytree(folder, tmp_path / "one")  # to resume one seed alone below
    monkeypatch.setattr("grokrun.filters.GradFilter.apply", original)

    result = cli(["train", "--resume", folder, "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": 95% val acc") == 3  # one line per seed
    for s in range(3):
        resumed, whole = folder / f"seed{s}", tmp_path / "whole" / "modular-ema-seeds0-2" / f"seed{s}"
        assert metrics(resumed) == metrics(whole)  # exactly: the stack is rebuilt from the checkpoints bit for bit
        assert summary(resumed)["status"] == "completed"

    # Each seed's checkpoint is a single run's: one seed resumes alone too, to the same numbers (1e-9).
    result = cli(["train", "--resume", tmp_path / "one" / "seed1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert_same_metrics(tmp_path / "one" / "seed1", tmp_path / "whole" / "modular-ema-seeds0-2" / "seed1")
    assert "trained_with" not in summary(tmp_path / "one" / "seed1")


def test_resuming_a_finished_folder_does_nothing(cli, tmp_path):
    args = ["train", *SMALL_MODULAR, "--max-steps", "8", "--seeds", "0,1", "--out", tmp_path, "--quiet"]
    assert cli(args).exit_code == 0
    result = cli(["train", "--resume", tmp_path / "modular-none-seeds0-1"])
    assert result.exit_code == 0 and "the 2 runs in" in result.stdout and "have all ended" in result.stdout


def test_compare_trains_each_variants_seeds_together_unless_told_not_to(cli, tmp_path):
    base = ["compare", *[a for a in SMALL_MODULAR if a != "modular" and a != "--task"], "--task", "modular",
            "--filter", "ema", "--seeds", "0,1", "--max-steps", "12", "--quiet"]
    result = cli([*base, "--out", tmp_path / "batched"])
    assert result.exit_code == 0, result.output
    assert summary(tmp_path / "batched" / "ema-seed1")["trained_with"] == 2
    assert "Seeds trained together as one stacked model (baseline: 2, ema: 2)" in \
        (tmp_path / "batched" / "comparison.md").read_text()
    result = cli([*base, "--no-batch", "--out", tmp_path / "alone"])
    assert result.exit_code == 0, result.output
    assert "trained_with" not in summary(tmp_path / "alone" / "ema-seed1")
    assert "stacked" not in (tmp_path / "alone" / "comparison.md").read_text()


def test_a_task_that_cannot_stack_its_seeds_runs_them_one_after_another(cli, tmp_path):
    from fakedata import write_csv

    write_csv(tmp_path / "reviews.csv")
    result = cli(["train", "--task", "imdb", "--data-file", tmp_path / "reviews.csv", "--size", "60", "--seq-len", "20",
                  "--max-steps", "4", "--seeds", "0,1", "--out", tmp_path / "runs", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "the imdb task cannot train seeds together (its model cannot be stacked); its 2 seeds run one after " \
           "another" in result.stdout
    for s in (0, 1):
        assert summary(tmp_path / "runs" / "imdb-none-seeds0-1" / f"seed{s}")["status"] == "completed"


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,1", "--seed", "3"], "give --seed N for one run or --seeds for several, not both"),
    (["--seeds", "3-1"], "--seeds: a range runs upwards (such as 0-15), got '3-1'"),
    (["--seeds", "0-99999999"], "--seeds: at most 10,000 seeds at once"),
    (["--seeds", "x"], "--seeds must be seeds or ranges such as 0,1,2 or 0-15, got 'x'"),
])
def test_bad_seeds_are_one_line_errors(cli, tmp_path, args, message):
    result = cli(["train", *SMALL_MODULAR, "--max-steps", "2", "--out", tmp_path, *args])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {message}"), result.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_resume_takes_no_seeds(cli, tmp_path):
    assert cli(["train", *SMALL_MODULAR, "--max-steps", "4", "--seeds", "0,1", "--out", tmp_path, "-q"]).exit_code == 0
    result = cli(["train", "--resume", tmp_path / "modular-none-seeds0-1", "--seeds", "0,1"])
    assert result.exit_code == 2 and "drop --seeds" in result.stderr

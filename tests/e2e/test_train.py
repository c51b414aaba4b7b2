"""The training engine end to end, through the CLI as a user runs it."""

import json
import os
import signal
import sys

import pytest
import torch

from conftest import metric_rows as metrics
from grokrun.optim import warmup_factor
from grokrun.filters import GradFilter
from grokrun.results import metric_summary


# A problem small enough to solve completely in seconds: x + y mod 23 with 80% of the table for training.
# AdamW's strong weight decay makes it generalize reliably: seeds 0-4 all reach 100% val acc within
# 1,164-1,700 steps with EMA (torch 2.15, CPU); the test allows 3,000.
SMALL = ["--task", "modular", "--op", "add", "--p", "23", "--train-frac", "0.8", "--width", "64",
         "--layers", "1", "--batch-size", "128", "--lr", "3e-3", "--optimizer", "adamw", "--weight-decay", "1.0",
         "--quiet"]


def run(cli, tmp_path, *args):
    result = cli(["train", "--out", str(tmp_path / "runs"), *SMALL, *args])
    assert "Traceback" not in result.output, result.output
    return result


def run_dir_of(result):
    line = next(l for l in result.output.splitlines() if l.startswith("run: "))
    from pathlib import Path

    return Path(line.split()[1])



def summary(path):
    return json.loads((path / "summary.json").read_text())


def test_small_problem_reaches_full_validation_accuracy(cli, tmp_path):
    result = run(cli, tmp_path, "--filter", "ema", "--stop-at-acc", "1.0", "--max-steps", "3000")
    assert result.exit_code == 0, result.output
    path = run_dir_of(result)
    s = summary(path)
    assert s["status"] == "stopped_at_target"
    assert s["final"]["val_acc"] == 1.0 and s["best_val_acc"] == 1.0
    assert s["steps"] < 3000 and s["steps"] == s["final"]["step"]
    assert s["steps_to_val_acc"]["0.99"] <= s["steps"]
    assert s["steps_to_val_acc"]["1"] == s["steps"]  # the target asked for is among the summary's thresholds
    assert s["wall_s_to_val_acc"]["1"] == float(metrics(path, drop=())[-1]["wall_s"])
    last = metrics(path)[-1]
    assert float(last["val_acc"]) == 1.0 and int(last["step"]) == s["steps"]
    # the headline: where the run went, then steps to 95%, ms/step and peak memory
    lines = result.output.strip().splitlines()
    assert lines[-2] == f"run: {path} (stopped at target after {s['steps']:,} steps)"
    # the run's own target is the headline's threshold: it stopped on reaching it
    assert lines[-1].startswith(f"100% val acc at step {s['steps']:,} (")
    assert "ms/step" in lines[-1] and "MB" in lines[-1]
    assert s["ms_per_step"] > 0 and s["peak_memory_mb"] > 0 and s["wall_s"] > 0


def test_run_directory_contract(cli, tmp_path):
    result = run(cli, tmp_path, "--filter", "ma", "--window-size", "5", "--max-steps", "12", "--eval-every", "5")
    assert result.exit_code == 0, result.output
    path = run_dir_of(result)
    assert path.name == "modular-ma-seed0"
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv", "snapshots",
                                                     "summary.json"]
    rows = metrics(path, drop=())
    assert list(rows[0]) == ["step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "weight_norm",
                             "softmax_collapse"]
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 12]  # step 0, every 5, and the last step
    assert [r["softmax_collapse"] for r in rows] == ["0.0", "", "", "0.0"]  # where the training set is scored
    config = json.loads((path / "config.json").read_text())
    # weight_norm at step 0: the L2 norm of all initial parameters, computed here by hand
    from grokrun.config import resolve
    from grokrun.tasks import task

    model = task("modular").build(resolve(path / "config.json", {}), torch.device("cpu"), torch.float32).model
    by_hand = sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()) ** 0.5
    assert float(rows[0]["weight_norm"]) == pytest.approx(by_hand, rel=1e-6)
    assert float(rows[-1]["weight_norm"]) != float(rows[0]["weight_norm"])
    assert config["filter"] == {"name": "ma", "alpha": 0.98, "lamb": 5.0, "window_size": 5,
                                "filter_type": "mean", "warmup": True, "start": 0, "normalize_lr": False}
    assert config["modular"]["p"] == 23 and "mnist" not in config
    s = summary(path)
    assert s["status"] == "completed" and s["steps"] == 12 and s["max_steps"] == 12
    assert s["dtype"] == "float32" and s["device"] == "cpu" and s["versions"]["torch"] == torch.__version__


def test_same_seed_gives_identical_metrics_and_a_new_directory(cli, tmp_path):
    args = ("--filter", "ema", "--max-steps", "30", "--eval-every", "10", "--seed", "7")
    first, second = run(cli, tmp_path, *args), run(cli, tmp_path, *args)
    a, b = run_dir_of(first), run_dir_of(second)
    assert (a.name, b.name) == ("modular-ema-seed7", "modular-ema-seed7-2")  # never overwritten
    assert metrics(a) == metrics(b)
    other = run_dir_of(run(cli, tmp_path, *args[:-1], "8"))
    assert metrics(other) != metrics(a)  # the seed matters


def test_rerun_from_config_json_repeats_the_run(cli, tmp_path):
    first = run_dir_of(run(cli, tmp_path, "--filter", "ma", "--window-size", "3", "--max-steps", "20",
                           "--eval-every", "10"))
    again = cli(["train", "--config", str(first / "config.json"), "--quiet"])
    assert again.exit_code == 0, again.output
    second = run_dir_of(again)
    assert second.parent == first.parent and second != first
    assert metrics(first) == metrics(second)


def test_filter_changes_the_trajectory(cli, tmp_path):
    base = run_dir_of(run(cli, tmp_path, "--filter", "none", "--max-steps", "20", "--eval-every", "10"))
    # SMALL fixes the weight decay, so the EMA preset's own does not apply: only the filter differs
    ema = run_dir_of(run(cli, tmp_path, "--filter", "ema", "--max-steps", "20", "--eval-every", "10"))
    off = run_dir_of(run(cli, tmp_path, "--filter", "ema", "--lamb", "0", "--max-steps", "20", "--eval-every", "10",
                         "--name", "lamb0"))
    assert metrics(ema)[1:] != metrics(base)[1:]
    assert metrics(ema)[0] == metrics(base)[0]  # same initialization
    assert metrics(off) == metrics(base)  # lamb 0 adds nothing: the baseline exactly


def test_divergence_stops_the_run_with_status_1(cli, tmp_path):
    result = run(cli, tmp_path, "--lr", "1e30", "--max-steps", "200", "--eval-every", "10")
    assert result.exit_code == 1, result.output
    path = run_dir_of(result)
    s = summary(path)
    assert s["status"] == "diverged" and s["steps"] == 10  # found at the first evaluation after it happened
    assert 1 <= s["diverged_at"] <= 10
    assert f"diverged at step {s['diverged_at']}: the loss or a gradient became non-finite; try a smaller " \
           "--lamb or --lr" in result.output


def test_a_non_finite_gradient_is_divergence_too(cli, tmp_path, monkeypatch):
    # At step 3 the loss gains sqrt(|w - w|): its value is 0, its gradient is not finite (as an overflow in
    # the backward pass would be), so the loss stays finite and only the gradient check can see it.
    from grokrun.tasks.modular import ModularTask

    calls = {"n": 0}
    original = ModularTask.loss

    def loss(self, idx):
        calls["n"] += 1
        value = original(self, idx)
        if calls["n"] == 3:
            w = next(self.model.parameters()).view(-1)[0]
            value = value + torch.sqrt(torch.abs(w - w.detach()))
        return value

    monkeypatch.setattr(ModularTask, "loss", loss)
    result = run(cli, tmp_path, "--max-steps", "20", "--eval-every", "10")
    assert result.exit_code == 1, result.output
    s = summary(run_dir_of(result))
    assert s["status"] == "diverged" and s["diverged_at"] == 3


def ctrl_c_during_step(monkeypatch, n, times=1):
    """Send SIGINT to this process ``times`` times during the n-th step, as Ctrl-C would.
    (Through the filter, not the optimizer's step: torch re-wraps that per subclass.)"""
    calls = {"n": 0}
    original = GradFilter.apply

    def apply(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(GradFilter, "apply", apply)


def test_interrupted_run_finishes_its_step_checkpoints_and_says_so(cli, tmp_path, monkeypatch):
    ctrl_c_during_step(monkeypatch, 8)
    result = run(cli, tmp_path, "--max-steps", "50", "--eval-every", "5")
    assert result.exit_code == 130, result.output
    path = run_dir_of(result)
    s = summary(path)
    assert s["status"] == "interrupted" and s["steps"] == 8  # the step in flight finished
    assert "(interrupted after 8 steps)" in result.output
    assert f"continue with: grokrun train --resume {path}" in result.output
    assert [int(r["step"]) for r in metrics(path)] == [0, 5]  # no evaluation added at the stop
    assert (path / "checkpoint.pt").is_file()


def test_second_ctrl_c_stops_at_once_without_a_summary(cli, tmp_path, monkeypatch):
    ctrl_c_during_step(monkeypatch, 8, times=2)  # the second arrives before the step is done
    result = run(cli, tmp_path, "--max-steps", "50", "--eval-every", "5", "--checkpoint-every", "5")
    assert result.exit_code == 130
    path = tmp_path / "runs" / "modular-none-seed0"
    assert not (path / "summary.json").exists() and (path / "checkpoint.pt").is_file()
    assert result.stderr.strip() == (f"stopped at once (a second interrupt): {path} has no summary; "
                                     f"grokrun train --resume {path} continues from its last checkpoint")


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_other_precisions_train(cli, tmp_path, dtype):
    result = run(cli, tmp_path, "--filter", "ema", "--dtype", dtype, "--max-steps", "20", "--eval-every", "10")
    assert result.exit_code == 0, result.output
    path = run_dir_of(result)
    rows = metrics(path)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert summary(path)["dtype"] == dtype
    if dtype == "float64":
        f32 = run_dir_of(run(cli, tmp_path, "--filter", "ema", "--max-steps", "20", "--eval-every", "10"))
        assert metrics(f32) != rows  # the precision is real, not a label


def test_no_host_sync_between_evaluations(cli, tmp_path, monkeypatch):
    """.item(), .tolist() and bool() of a tensor wait for the device; count them over a run.

    torch.optim's Adam keeps its step counter on the host by design (unless capturable) and reads it
    with .item() in ``_get_value``: no device sync, so that one caller is not counted.
    """
    counts = {"n": 0}
    for name in ("item", "tolist", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            caller = sys._getframe(1).f_code
            if not (caller.co_name == "_get_value" and caller.co_filename.endswith("optimizer.py")):
                counts["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    result = run(cli, tmp_path, "--filter", "ema", "--max-steps", "100", "--eval-every", "50", "--clip-grad", "1.0",
                 "--checkpoint-every", "50")
    assert result.exit_code == 0, result.output
    steps_run = 100
    evaluations = 3  # steps 0, 50 and 100
    assert counts["n"] <= 3 * evaluations < steps_run


def test_clip_grad_bounds_each_update(cli, tmp_path):
    # SGD without momentum moves each weight by lr x grad, so clipping the gradient's norm to c bounds each
    # step's move to lr x c: the parameter norm can change by at most steps x lr x c over the run.
    args = ("--optimizer", "sgd", "--beta1", "0", "--weight-decay", "0", "--lr", "0.1", "--warmup-steps", "0",
            "--max-steps", "20", "--eval-every", "20")
    clipped = run_dir_of(run(cli, tmp_path, *args, "--clip-grad", "1e-3", "--name", "clipped"))
    free = run_dir_of(run(cli, tmp_path, *args, "--name", "free"))
    norms = {p.name: [float(r["weight_norm"]) for r in metrics(p)] for p in (clipped, free)}
    assert norms["clipped"][0] == norms["free"][0]
    assert abs(norms["clipped"][-1] - norms["clipped"][0]) <= 20 * 0.1 * 1e-3 * 1.0001
    assert abs(norms["free"][-1] - norms["free"][0]) > 20 * 0.1 * 1e-3


def test_warmup_factor():
    f = warmup_factor(4)  # LambdaLR's counter i is 0 at step 1: as published, step 1 runs at rate 0
    assert [f(i) for i in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_factor(0)(0) == 1.0


def test_metric_summary_by_hand():
    rows = [
        {"step": 0, "wall_s": 0.0, "val_loss": 2.0, "val_acc": 0.1},
        {"step": 10, "wall_s": 1.0, "val_loss": 1.0, "val_acc": 0.92},
        {"step": 20, "wall_s": 2.0, "val_loss": 1.5, "val_acc": 0.96},
        {"step": 30, "wall_s": 3.0, "val_loss": float("nan"), "val_acc": 0.5},
    ]
    s = metric_summary(rows)
    assert s["steps_to_val_acc"] == {"0.5": 10, "0.9": 10, "0.95": 20, "0.99": None}
    assert s["wall_s_to_val_acc"] == {"0.5": 1.0, "0.9": 1.0, "0.95": 2.0, "0.99": None}
    assert (s["best_val_acc"], s["min_val_loss"], s["min_val_loss_step"]) == (0.96, 1.0, 10)
    assert s["steps_to_train_acc"] == {"0.5": None, "0.9": None, "0.95": None, "0.99": None}  # never scored
    assert s["grokking_delay"] == {"0.5": None, "0.9": None, "0.95": None, "0.99": None}


def test_grokking_delay_by_hand():
    """Training accuracy crosses 0.95 at step 10 (scored at steps 0, 10 and 30), validation at step 40: a delay of
    30 steps, 4 times the training set's; at 0.5 both cross at step 10; 0.99 is reached on the training set only."""
    rows = [
        {"step": 0, "wall_s": 0.0, "train_acc": 0.1, "val_acc": 0.1},
        {"step": 10, "wall_s": 1.0, "train_acc": 0.97, "val_acc": 0.6},
        {"step": 20, "wall_s": 2.0, "train_acc": None, "val_acc": 0.8},
        {"step": 30, "wall_s": 3.0, "train_acc": 1.0, "val_acc": 0.9},
        {"step": 40, "wall_s": 4.0, "train_acc": None, "val_acc": 0.96},
    ]
    s = metric_summary(rows)
    assert s["steps_to_train_acc"] == {"0.5": 10, "0.9": 10, "0.95": 10, "0.99": 30}
    assert s["wall_s_to_train_acc"]["0.99"] == 3.0
    assert s["grokking_delay"] == {"0.5": {"steps": 0, "ratio": 1.0}, "0.9": {"steps": 20, "ratio": 3.0},
                                   "0.95": {"steps": 30, "ratio": 4.0}, "0.99": None}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2])
def test_published_ema_run_groks_within_1200_steps(cli, tmp_path, seed):
    """The headline reproduction: the published EMA run (about a minute and a quarter on one core), seeds 0 and 2;
    both within the issue's bound puts the median of seeds 0-2 within it. The published script takes 910, 1,340
    and 920 steps for seeds 0, 1 and 2 (docs/studies/grokfast.md); grokrun draws the same weights, split and
    batches, so it should too. The bound is not the exact count: floating-point rounding differs across CPUs,
    thread counts and torch versions, and the count is chaotic in it. (Stacked seeds are checked against seeds
    alone in float64 in tests/unit/test_stacking.py.) Validation every 50 steps instead of every epoch: the
    training is the same (scoring never changes it, test_the_training_set_is_scored_at_every_tenth_evaluation_
    and_the_last), the count is rounded up to the next multiple of 50, so the bound is no looser, and the run
    takes three quarters of the time (the per-epoch evaluations cost a third of its steps' time).
    """
    result = cli(["train", "--task", "modular", "--filter", "ema", "--seed", seed, "--stop-at-acc", "0.95",
                  "--max-steps", "2000", "--eval-every", "50", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    s = summary(run_dir_of(result))
    assert s["status"] == "stopped_at_target" and s["steps_to_val_acc"]["0.95"] <= 1200


def test_stop_at_loss_ends_at_the_first_evaluation_below_it_and_with_stop_at_acc_once_both_are_met(cli, tmp_path):
    """--stop-at-loss: the run ends at the first evaluation whose validation loss is below the target (Nanda et
    al.'s criterion, test loss < 1e-2), recorded as steps_to_val_loss; with --stop-at-acc it ends once both are met.
    (Targets this run meets within its first thousand steps: validation loss starts at ~3.2 and first falls below
    2.6 near step 230, accuracy reaches 0.5 near step 700, with the loss then near 1.5.)"""
    loss_only = run(cli, tmp_path, "--filter", "ema", "--stop-at-loss", "2.6", "--max-steps", "3000", "--name", "loss")
    assert loss_only.exit_code == 0, loss_only.output
    rows, s = metrics(run_dir_of(loss_only), drop=()), summary(run_dir_of(loss_only))
    first = next(r for r in rows if float(r["val_loss"]) < 2.6)
    assert s["status"] == "stopped_at_target" and s["steps"] == int(first["step"]) == int(rows[-1]["step"]) < 3000
    assert s["steps_to_val_loss"] == {"2.6": s["steps"]} and s["wall_s_to_val_loss"]["2.6"] == float(first["wall_s"])
    both = run(cli, tmp_path, "--filter", "ema", "--stop-at-loss", "2.6", "--stop-at-acc", "0.5", "--max-steps", "3000",
               "--name", "both")
    rows, s = metrics(run_dir_of(both)), summary(run_dir_of(both))
    assert s["status"] == "stopped_at_target"
    assert s["steps_to_val_loss"]["2.6"] < s["steps"] == s["steps_to_val_acc"]["0.5"]
    assert [r for r in rows if float(r["val_acc"]) >= 0.5][0] == rows[-1] and float(rows[-1]["val_loss"]) < 2.6
    never = run(cli, tmp_path, "--stop-at-loss", "1e-9", "--max-steps", "20", "--name", "never")
    s = summary(run_dir_of(never))
    assert s["status"] == "completed" and s["steps_to_val_loss"] == {"1e-09": None}
    assert "steps_to_val_loss" not in summary(run_dir_of(run(cli, tmp_path, "--max-steps", "5", "--name", "none")))
    for bad, why in (("0", "a positive number, got 0.0"), ("-1", "a positive number, got -1.0"),
                     ("inf", "a finite number, got inf"), ("nan", "a finite number, got nan")):
        refused = run(cli, tmp_path, "--stop-at-loss", bad, "--name", f"bad{bad}")
        assert refused.exit_code == 2 and refused.output == f"error: --stop-at-loss must be {why}\n"
        assert not (tmp_path / "runs" / f"bad{bad}").exists()


def test_the_training_set_is_scored_at_every_tenth_evaluation_and_the_last(cli, tmp_path):
    """Validation at every evaluation (thresholds are on it); the training set, as large, at every 10th (counting
    step 0's) and at the budget's last step, its cells empty elsewhere; --train-eval-every 1 scores it always."""
    path = run_dir_of(run(cli, tmp_path, "--max-steps", "60", "--eval-every", "5", "--name", "sparse"))
    rows = metrics(path)
    assert [int(r["step"]) for r in rows] == list(range(0, 61, 5)) and all(r["val_acc"] for r in rows)
    assert [int(r["step"]) for r in rows if r["train_acc"]] == [0, 50, 60]
    assert all(r["train_loss"] == "" for r in rows if not r["train_acc"])
    dense = run_dir_of(run(cli, tmp_path, "--max-steps", "60", "--eval-every", "5", "--train-eval-every", "1",
                           "--name", "dense"))
    full = metrics(dense)
    assert all(r["train_acc"] for r in full)
    assert [r for r in full if int(r["step"]) in (0, 50, 60)] == [r for r in rows if r["train_acc"]]  # same values
    assert [r["val_acc"] for r in full] == [r["val_acc"] for r in rows]  # scoring never changes the training


def test_compile_compiles_each_runs_own_model_and_never_stacks(cli, tmp_path, monkeypatch):
    """--compile puts the run's module through torch.compile in place (so checkpoints keep their keys) and trains
    the seeds of a command one after another, as a stack is another program; recorded in config.json."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    result = run(cli, tmp_path, "--max-steps", "3", "--eval-every", "3", "--seeds", "0,1", "--compile")
    assert result.exit_code == 0, result.output
    assert compiled == ["Decoder", "Decoder"]
    assert "--compile compiles one run's model; its 2 seeds run one after another" in result.output
    configs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/config.json")]
    assert len(configs) == 2 and all(c["compile"] is True for c in configs)


def test_compile_with_cuda_graphs_on_is_one_line(cli, tmp_path):
    result = run(cli, tmp_path, "--max-steps", "3", "--compile", "--cuda-graph", "on")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --compile and --cuda-graph on are two ways to replay the step; choose one"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one_does(cli, tmp_path):
    """Through torch.compile for real (about 20 s of compiling here): the same run to within float32 rounding
    (inductor fuses operations, so it cannot be equal), and its checkpoint loads into an uncompiled model."""
    args = ("--max-steps", "40", "--eval-every", "10", "--seed", "0")
    eager, compiled = run(cli, tmp_path, *args, "--name", "eager"), run(cli, tmp_path, *args, "--compile", "--name", "c")
    assert eager.exit_code == compiled.exit_code == 0, compiled.output
    a, b = metrics(tmp_path / "runs" / "eager"), metrics(tmp_path / "runs" / "c")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert float(y["val_loss"]) == pytest.approx(float(x["val_loss"]), rel=1e-3)
    from grokrun.models import load_weights
    from grokrun.tasks import task
    from grokrun.config import resolve

    cfg = resolve(tmp_path / "runs" / "c" / "config.json", {})
    load_weights(task("modular").build_model(cfg.modular), tmp_path / "runs" / "c")


@pytest.mark.parametrize("flag, flushed", [([], True), (["--no-flush-denormals"], False)])
def test_a_run_flushes_denormal_floats_unless_told_not_to(cli, tmp_path, monkeypatch, flag, flushed):
    """--flush-denormals (the default) has the run's CPU math take floats below 1.2e-38 as 0, during its steps;
    recorded in config.json, and torch's default (off) is back once the run ends."""
    from grokrun.engine.run import Run
    from grokrun.engine.runner import flushing_denormals

    seen = []
    step = Run.step

    def observed(self, i):
        seen.append(flushing_denormals())
        return step(self, i)

    monkeypatch.setattr(Run, "step", observed)
    result = run(cli, tmp_path, "--max-steps", "3", *flag)
    assert result.exit_code == 0, result.output
    assert seen == [flushed] * 3
    assert json.loads((run_dir_of(result) / "config.json").read_text())["flush_denormals"] is flushed
    assert not flushing_denormals()


@pytest.mark.parametrize("flag", [[], ["--no-flush-denormals"]])
def test_a_launcher_that_flushes_denormals_still_does_after_a_run(cli, tmp_path, flag):
    """A run sets the flush for its steps only: code of the user's own that flushed before (as the run does) still
    flushes after it, whatever the run's setting."""
    from grokrun.engine.runner import flushing_denormals

    assert not flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        assert flushing_denormals()
        result = run(cli, tmp_path, "--max-steps", "2", *flag)
        assert result.exit_code == 0, result.output
        assert flushing_denormals()
    finally:
        torch.set_flush_denormal(False)
    assert not flushing_denormals()

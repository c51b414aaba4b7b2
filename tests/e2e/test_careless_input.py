"""Careless and hostile input: nothing crashes, nothing is lost, and every
report agrees with itself. Each drives the CLI as a user would meet the problem."""

import json
import os
import shutil
import signal

import matplotlib
import pytest
import torch

from grokrun import checkpoint
from grokrun.engine import ProgressReport, eval_steps
from grokrun.filters import GradFilter
from grokrun.results import CHECKPOINT, METRICS, SUMMARY
from grokrun.results import read_metrics

# A tiny modular problem: runs of a few steps, a fraction of a second each.
TINY = ["--op", "add", "--p", "11", "--train-frac", "0.8", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--quiet"]
# Diverges at step 1 or 2, before the first evaluation after step 0.
DIVERGES_AT_ONCE = ["--p", "11", "--optimizer", "sgd", "--lr", "1e6", "--warmup-steps", "0", "--eval-every", "5",
                    "--max-steps", "30", "--quiet"]


def one_line_error(result, *parts):
    """Exit 2, one line on stderr starting 'error: ' and holding each part."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def train(cli, out, *args):
    return cli(["train", "--out", out, *TINY, *args])


def run_dir_of(result):
    from pathlib import Path

    return Path(next(line for line in result.stdout.splitlines() if line.startswith("run: ")).split()[1])


# 1 --------------------------------------------------------------------------------------------------------

def test_plot_and_compare_survive_a_run_that_diverged_before_its_first_evaluation(cli, tmp_path):
    out = tmp_path / "d"
    for seed in (0, 1):
        assert cli(["train", *DIVERGES_AT_ONCE, "--out", out, "--seed", seed]).exit_code == 1
    assert train(cli, out, "--max-steps", "8", "--name", "fine").exit_code == 0
    plotted = cli(["plot", out])
    assert plotted.exit_code == 0, plotted.output
    assert plotted.stderr.count("no finite evaluation after step 0 to draw (it diverged at step") == 2
    assert (out / "fine" / "accuracy.png").is_file() and not (out / "modular-none-seed0" / "loss.png").exists()
    tabulated = cli(["compare", out])
    assert tabulated.exit_code == 0, tabulated.output
    assert "seed 0 diverged at step" in (out / "comparison.md").read_text()


def test_only_runs_with_nothing_to_draw_is_exit_2(cli, tmp_path):
    out = tmp_path / "d"
    assert cli(["train", *DIVERGES_AT_ONCE, "--out", out]).exit_code == 1
    result = cli(["plot", out])
    assert result.exit_code == 2 and "wrote 0 figures" not in result.stdout
    assert result.stderr.splitlines()[-1] == f"error: nothing to draw in {out} (see the warnings above)"


# 2 --------------------------------------------------------------------------------------------------------

def test_bracketed_names_and_paths_are_printed_as_they_are(cli, tmp_path, monkeypatch):
    result = train(cli, tmp_path / "runs", "--max-steps", "2", "--name", "[bold]myrun")
    assert result.exit_code == 0
    assert f"run: {tmp_path / 'runs' / '[bold]myrun'} (completed after 2 steps)" in result.stdout
    missing = tmp_path / "x" / "[red]nope"
    assert one_line_error(cli(["plot", missing])) == f"error: no such folder: {missing}"
    out = tmp_path / "variants"
    for steps, folder in ((4, "a"), (8, "b")):  # two variants both named "v": the table tells them apart
        assert train(cli, out / folder, "--max-steps", steps, "--name", "v-seed0").exit_code == 0
    from grokrun import cli as command_line

    monkeypatch.setattr(command_line.out, "_width", 300)  # a wide terminal (its width is read when grokrun starts)
    table = cli(["compare", out])
    assert table.exit_code == 0
    assert "v [train.max_steps=8]" in table.stdout  # the names that tell variants apart


# 3 --------------------------------------------------------------------------------------------------------

def test_file_system_errors_are_one_line(cli, tmp_path, monkeypatch):
    a_file = tmp_path / "hostname"
    a_file.write_text("not a folder")
    one_line_error(train(cli, a_file), f"--out {a_file} is a file, not a folder")
    one_line_error(train(cli, "/proc/grokrun-runs"), "cannot create /proc/grokrun-runs")
    one_line_error(train(cli, tmp_path / "runs", "--name", "n" * 300), "File name too long")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    one_line_error(cli(["compare", "--out", a_file, *TINY, "--max-steps", "2"]), f"--out {a_file} is a file")
    # plot where nothing can be written (as a read-only folder, which root would write to anyway)
    assert train(cli, tmp_path / "ro", "--max-steps", "4").exit_code == 0
    from matplotlib.figure import Figure

    def refuse(self, path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Figure, "savefig", refuse)
    result = cli(["plot", tmp_path / "ro"])
    assert result.exit_code == 2
    assert "cannot write figures in" in result.stderr and "Permission denied" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no figure could be written")


# 4 --------------------------------------------------------------------------------------------------------

def test_a_second_ctrl_c_while_the_checkpoint_is_written_lets_it_finish(cli, tmp_path, monkeypatch):
    calls = {"n": 0}
    original_apply, original_save = GradFilter.apply, torch.save

    def apply(self, *a, **k):  # the first Ctrl-C, during step 6
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return original_apply(self, *a, **k)

    def save(obj, f, *a, **k):  # the second, while the checkpoint of the stop is being written
        if isinstance(obj, dict) and obj.get("step") == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return original_save(obj, f, *a, **k)

    monkeypatch.setattr(GradFilter, "apply", apply)
    monkeypatch.setattr(torch, "save", save)
    result = train(cli, tmp_path / "runs", "--max-steps", "50", "--checkpoint-every", "100")
    assert result.exit_code == 130
    assert result.stderr.startswith("stopped at once (a second interrupt)")
    run = tmp_path / "runs" / "modular-none-seed0"
    assert checkpoint.load(run)["step"] == 6 and not (run / SUMMARY).exists()  # whole, and no summary
    monkeypatch.undo()
    resumed = cli(["train", "--resume", run, "--quiet"])
    assert resumed.exit_code == 0 and "(completed after 50 steps)" in resumed.stdout


# 5 --------------------------------------------------------------------------------------------------------

def test_huge_values_are_refused_before_anything_is_written(cli, tmp_path):
    out = tmp_path / "runs"
    one_line_error(train(cli, out, "--max-steps", "1000000001"), "--max-steps must be in [1, 1,000,000,000]")
    one_line_error(train(cli, out, "--seed", str(2**64)), "--seed must be in [0, 4,294,967,295]")
    one_line_error(train(cli, out, "--filter", "ma", "--window-size", "100000000"),
                   "--window-size must be in [1, 1,000]")
    one_line_error(train(cli, out, "--p", "100000"), "--p must be <= 2,000")
    one_line_error(train(cli, out, "--width", "1000000"), "--width must be <= 4,096")
    one_line_error(cli(["compare", "--seeds", "99999999999999999999", *TINY]), "--seeds: each seed must be in [0,")
    assert not out.exists()


def test_a_budget_of_a_billion_steps_costs_no_memory_to_schedule():
    from grokrun.config import resolve

    schedule = eval_steps(resolve(None, {"train.max_steps": 10**9}).train, steps_per_epoch=10)
    assert 10 in schedule and 10**9 in schedule and 11 not in schedule and 0 not in schedule
    assert len(json.dumps(vars(schedule))) < 100  # arithmetic, not a set of 10^8 steps


# 6 and 7 --------------------------------------------------------------------------------------------------

def interrupted_run(cli, out, monkeypatch, *args):
    """A run stopped by Ctrl-C in step 6, with its checkpoint and summary."""
    calls = {"n": 0}
    original = GradFilter.apply

    def apply(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(GradFilter, "apply", apply)
    result = train(cli, out, "--max-steps", "40", *args)
    monkeypatch.setattr(GradFilter, "apply", original)
    assert result.exit_code == 130, result.output
    return run_dir_of(result)


@pytest.mark.parametrize("damage", ["missing", "garbled"])
def test_a_failed_resume_deletes_nothing(cli, tmp_path, monkeypatch, damage):
    run = interrupted_run(cli, tmp_path / "runs", monkeypatch)
    if damage == "missing":
        (run / METRICS).unlink()
    else:
        (run / METRICS).write_text("step,wall_s,train_loss\n0,0.0,abc\n1,0.1,2.0\n")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    one_line_error(cli(["train", "--resume", run]), f"cannot read {run / METRICS}", "cannot be resumed")
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # summary.json and the snapshots included


def test_a_checkpoint_from_another_run_is_refused_naming_the_setting(cli, tmp_path, monkeypatch):
    plain = interrupted_run(cli, tmp_path / "a", monkeypatch)
    ma = interrupted_run(cli, tmp_path / "b", monkeypatch, "--filter", "ma", "--window-size", "3")
    shutil.copy(ma / CHECKPOINT, plain / CHECKPOINT)
    one_line_error(cli(["train", "--resume", plain]), "was written by a run with filter.name = 'ma'",
                   "config.json there says 'none'")
    wide = interrupted_run(cli, tmp_path / "c", monkeypatch, "--width", "32")
    shutil.copy(wide / CHECKPOINT, plain / CHECKPOINT)
    one_line_error(cli(["train", "--resume", plain]), "modular.width = 32")


def test_an_edited_config_is_refused_not_ignored(cli, tmp_path, monkeypatch):
    run = interrupted_run(cli, tmp_path / "runs", monkeypatch)
    config = json.loads((run / "config.json").read_text())
    config["optim"]["lr"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    one_line_error(cli(["train", "--resume", run]), "optim.lr = 0.001", "says 0.5")


# 8 --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number, got inf"),
    (["--filter", "ema", "--lamb", "inf"], "--lamb must be a finite number, got inf"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--name", ".hidden"], "--name must be a plain folder name: printable, not hidden"),
    (["--name", "two\nlines"], "--name must be a plain folder name: printable"),
    (["--name", "tab\there"], "--name must be a plain folder name: printable"),
    (["--name", " "], "--name must be a plain folder name: printable"),
    (["--seeds", "1--2"], "--seeds must be seeds or ranges such as 0,1,2 or 0-15, got '1--2'"),
])
def test_nonsense_is_refused(cli, tmp_path, args, message):
    one_line_error(train(cli, tmp_path / "runs", *args), message)
    assert not (tmp_path / "runs").exists()


def test_a_config_holding_a_5000_digit_integer_is_one_line(cli, tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("[train]\nmax_steps = " + "9" * 5000 + "\n")
    one_line_error(cli(["train", "--config", path, "--out", tmp_path / "r"]),
                   f"cannot parse {path}: an integer of over 4,300 digits, which no setting takes")
    path.write_text("[train]\nmax_steps = " + "9" * 4000 + "\n")
    one_line_error(cli(["train", "--config", path, "--out", tmp_path / "r"]),
                   "--max-steps must be in [1, 1,000,000,000], got an integer of about 4,001 digits")
    assert not (tmp_path / "r").exists()


def test_settings_that_cannot_apply_are_refused_before_anything_is_written(cli, tmp_path):
    one_line_error(train(cli, tmp_path / "runs", "--width", "16", "--lora-rank", "200", "--max-steps", "2"),
                   "--lora-rank must be at most 16 for this model (the largest rank of its linear maps), got 200")
    one_line_error(cli(["train", "--task", "qm9", "--softmax-dtype", "float64", "--out", tmp_path / "runs"]),
                   "--softmax-dtype sets the precision of a classification loss; the qm9 task trains on none")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "checkpoint.pt").write_bytes(b"not a checkpoint")
    one_line_error(train(cli, tmp_path / "runs", "--init-from", damaged, "--max-steps", "2"),
                   f"--init-from {damaged}: cannot read {damaged / 'checkpoint.pt'}", "; start from another run")
    assert not (tmp_path / "runs").exists()


def test_a_filter_name_with_spaces_is_the_filter(cli, tmp_path):
    result = train(cli, tmp_path / "runs", "--filter", " ema", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "runs" / "modular-ema-seed0" / "config.json").read_text())
    assert config["filter"]["name"] == "ema" and config["filter"]["alpha"] == 0.98  # and EMA's preset
    assert config["optim"]["weight_decay"] == 0.005


def test_resume_given_a_file_says_so(cli, tmp_path):
    a_file = tmp_path / "config.json"
    a_file.write_text("{}")
    one_line_error(cli(["train", "--resume", a_file]), f"--resume {a_file}: a file; give the run directory")


def test_empty_seeds_and_out_are_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(cli(["compare", "--seeds", "", *TINY]), "--seeds must be seeds or ranges")
    one_line_error(cli(["train", "--out", "", *TINY]), "--out must name a folder")
    one_line_error(cli(["compare", "--out", "", *TINY]), "--out must name a folder")
    assert list(tmp_path.iterdir()) == []  # nothing written in the current directory


# 9 --------------------------------------------------------------------------------------------------------

def test_a_half_written_last_row_is_not_data(cli, tmp_path, make_run):
    path = make_run(tmp_path / "r", val_acc=[0.0, 0.5, 0.9])
    with open(path / METRICS, "a") as f:
        f.write("300,3.0,0.0")  # killed while writing the row: no line end
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [0, 100, 200]
    with open(path / METRICS, "a") as f:
        f.write("1\n400,4.0,0.1,1.0,0.1,0.95\n")  # the broken row now sits in the middle
    with pytest.raises(ValueError, match="line 5"):
        read_metrics(path)
    assert cli(["plot", path]).exit_code == 2  # unreadable: a warning, then nothing to draw


def test_resume_drops_a_half_written_row(cli, tmp_path, monkeypatch):
    run = interrupted_run(cli, tmp_path / "runs", monkeypatch)
    with open(run / METRICS, "a") as f:
        f.write("1")  # "12,0.01,..." cut after its first character: it must not become a row of step 1
    assert cli(["train", "--resume", run, "--quiet"]).exit_code == 0
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == sorted(set(steps)) and steps[:3] == [0, 4, 8], steps


# 10 -------------------------------------------------------------------------------------------------------

def test_the_headline_and_the_table_give_the_same_divergence_step(cli, tmp_path):
    out = tmp_path / "runs"
    result = cli(["train", "--out", out, *TINY, "--lr", "1e30", "--max-steps", "40", "--eval-every", "10"])
    assert result.exit_code == 1
    step = json.loads((run_dir_of(result) / SUMMARY).read_text())["diverged_at"]
    assert f"diverged at step {step}:" in result.stdout
    assert cli(["compare", out, "--out", tmp_path / "table"]).exit_code == 0
    assert f"seed 0 diverged at step {step}" in (tmp_path / "table" / "comparison.md").read_text()


def test_the_headline_uses_the_runs_own_target(cli, tmp_path):
    learns = ["--p", "23", "--width", "64", "--batch-size", "128", "--lr", "3e-3", "--optimizer", "adamw",
              "--weight-decay", "1.0"]  # the engine tests' small problem, which generalizes
    result = train(cli, tmp_path / "runs", *learns, "--stop-at-acc", "0.2", "--eval-every", "10", "--max-steps", "2000")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    steps = json.loads((run_dir_of(result) / SUMMARY).read_text())["steps"]
    assert lines[-2].endswith(f"(stopped at target after {steps} steps)")
    assert lines[-1].startswith(f"20% val acc at step {steps} (")  # not "95% val acc not reached"


def test_one_step_is_one_step(cli, tmp_path):
    result = train(cli, tmp_path / "runs", "--max-steps", "1")
    assert "(completed after 1 step)" in result.stdout and "not reached in 1 step (" in result.stdout


# 11 -------------------------------------------------------------------------------------------------------

def test_a_config_file_with_another_filter_takes_that_filters_preset(cli, tmp_path):
    from pathlib import Path

    ema_file = Path(__file__).parents[2] / "configs" / "modular_ema.toml"
    result = cli(["train", "--config", ema_file, "--filter", "ma", "--max-steps", "2", "--out", tmp_path, "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((run_dir_of(result) / "config.json").read_text())
    assert (config["filter"]["name"], config["filter"]["lamb"], config["filter"]["window_size"],
            config["optim"]["weight_decay"]) == ("ma", 5.0, 100, 0.01)  # the published MA run's


# 12 -------------------------------------------------------------------------------------------------------

def test_output_to_a_file_gets_plain_progress_lines(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(ProgressReport, "PLAIN_EVERY_S", 0.0)  # every evaluation, for the test
    args = [a for a in TINY if a != "--quiet"]
    result = cli(["train", "--out", tmp_path, *args, "--max-steps", "8"])
    assert result.exit_code == 0
    progress = [line for line in result.stdout.splitlines() if line.startswith("modular none seed 0: step ")]
    assert [line.split()[5] for line in progress] == ["4/8", "8/8"]
    assert "acc val" in progress[0] and "it/s" in progress[0]  # step 4: validation only
    assert "acc train" in progress[1]  # the last step: the training set scored too
    quiet = cli(["train", "--out", tmp_path, *TINY, "--max-steps", "8"])
    assert "step 4/8" not in quiet.stdout


# 13 -------------------------------------------------------------------------------------------------------

def test_help_says_what_each_flag_means_for_each_task(cli):
    lines = [line.strip("│ ") for line in cli(["train", "--help"], env={"COLUMNS": "300"}).stdout.splitlines()]

    def row(option):
        return next(line for line in lines if line.startswith(f"{option} "))

    assert "modular: Decoder layers (mlp: hidden layers). imdb: LSTM layers." in row("--layers")
    assert "imdb: Reviews" in row("--size") and "qm9: Molecules" in row("--size")
    assert "--no-ma-warmup" in row("--ma-warmup") and "not the learning-rate --warmup-steps" in row("--ma-warmup")
    assert "<bool>" not in row("--download") and "<bool>" not in row("--quiet")
    assert "at most 1e9" in row("--max-steps") and "1 to 1,000" in row("--window-size")
    plot_help = cli(["plot", "--help"], env={"COLUMNS": "300"}).stdout
    assert "weight_norm.png" in plot_help and "Compare" not in plot_help and "Plot" in plot_help


def test_the_overlay_legend_counts_unfinished_runs(cli, tmp_path, make_run, monkeypatch):
    make_run(tmp_path / "ema-seed0", seed=0, filter="ema", val_acc=[0.0, 0.5, 0.9])
    make_run(tmp_path / "ema-seed1", seed=1, filter="ema", val_acc=[0.0, 0.4, 0.5], steps=150, status="interrupted")
    make_run(tmp_path / "none-seed0", seed=0, val_acc=[0.0, 0.1, 0.2])
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")  # text kept as text, to read it back
    assert cli(["plot", tmp_path, "--format", "svg"]).exit_code == 0
    svg = (tmp_path / "comparison.svg").read_text()
    assert "ema: EMA α=0.98 λ=2 · adam wd 0.005 · 2 seeds (1 interrupted)" in svg
    assert "none: no filter · adam wd 0 · 1 seed<" in svg

"""grokrun sweep: grids of runs through the command line, their table and figures."""

import csv
import json
import math
import os
import signal
from pathlib import Path

import pytest

from conftest import ctrl_c_at
from grokrun import sweep as sw
from grokrun import sweep_results
from grokrun.flags import flags

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--max-steps", "12", "--quiet"]
GRID = ["--train-frac", "0.5,0.8", "--filter", "none,ema", "--seeds", "0", "--threshold", "0.3"]
PRESETS = sorted((Path(__file__).parents[2] / "configs" / "sweeps").glob("*.toml"))


def table(folder):
    with open(folder / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_values_that_print_alike_get_run_directories_of_their_own(cli, tmp_path):
    out = tmp_path / "close"
    result = cli(["sweep", *TINY, "--max-steps", "2", "--lr", "0.0012345671,0.0012345672,0.002", "--out", out])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "lr=0.0012345671-seed0", "lr=0.0012345672-seed0", "lr=0.002-seed0"]
    assert len(table(out)) == 3
    again = cli(["sweep", *TINY, "--max-steps", "2", "--lr", "0.0012345671,0.0012345672,0.002", "--out", out])
    assert again.exit_code == 0 and "3 already complete and reused" in again.output, again.output


def test_a_chain_of_filters_is_one_point_of_a_sweep(cli, tmp_path):
    out = tmp_path / "chain"
    result = cli(["sweep", *TINY, "--max-steps", "2", "--filter", "none,orthograd+ema", "--out", out])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["filter=none-seed0", "filter=orthograd+ema-seed0"]
    config = json.loads((out / "filter=orthograd+ema-seed0" / "config.json").read_text())
    assert config["filter"]["name"] == "orthograd,ema" and config["filter"]["alpha"] == 0.98  # the chain, as train's


def test_a_small_grid_end_to_end_and_again(cli, tmp_path):
    out = tmp_path / "sweep"
    result = cli(["sweep", *TINY, *GRID, "--out", out])
    assert result.exit_code == 0, result.output
    assert "4 runs to train, 0 already complete and reused" in result.stdout
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["filter=ema_train-frac=0.5-seed0", "filter=ema_train-frac=0.8-seed0",
                    "filter=none_train-frac=0.5-seed0", "filter=none_train-frac=0.8-seed0"]
    rows = table(out)
    assert len(rows) == 4 and {(r["filter"], r["train-frac"]) for r in rows} == \
        {("none", "0.5"), ("none", "0.8"), ("ema", "0.5"), ("ema", "0.8")}
    for row in rows:  # each row is its run's own numbers
        summary = json.loads((out / row["run_dir"] / "summary.json").read_text())
        assert "0.3" in summary["steps_to_val_acc"] and "0.3" in summary["steps_to_train_acc"]  # --threshold
        assert str(summary["steps_to_val_acc"]["0.3"]) == (row["steps_to_val_0.3"] or "None")
        assert row["status"] == summary["status"] == "completed" and int(row["steps"]) == summary["steps"] == 12
        config = json.loads((out / row["run_dir"] / "config.json").read_text())
        assert float(row["train-frac"]) == config["modular"]["train_frac"] and row["filter"] == config["filter"]["name"]
        assert float(row["best_val_acc"]) == summary["best_val_acc"]
    assert (out / "sweep_steps.png").is_file() and (out / "report.html").is_file()
    assert "data:image/png;base64," in (out / "report.html").read_text()
    again = cli(["sweep", *TINY, *GRID, "--out", out])
    assert again.exit_code == 0 and "0 runs to train, 4 already complete and reused" in again.stdout


def test_a_sweep_interrupted_midway_is_resumed_by_the_same_command(cli, tmp_path, monkeypatch):
    from grokrun.filters import GradFilter

    calls, original = {"n": 0}, GradFilter.apply

    def apply(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 15:  # step 3 of the second point (each point is one run of 12 steps)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(GradFilter, "apply", apply)
    out = tmp_path / "sweep"
    result = cli(["sweep", *TINY, *GRID, "--out", out])
    assert result.exit_code == 130, result.output
    assert f"interrupted: the same command continues the sweep in {out}" in result.stdout
    statuses = {r["run_dir"]: r["status"] for r in table(out)}  # the table of what exists is written
    assert sorted(statuses.values()) == ["completed", "interrupted"]
    monkeypatch.setattr(GradFilter, "apply", original)
    again = cli(["sweep", *TINY, *GRID, "--out", out])
    assert again.exit_code == 0, again.output
    assert "2 runs to train, 1 to resume, 1 already complete and reused" in again.stdout
    assert [r["status"] for r in table(out)] == ["completed"] * 4


def test_seeds_of_a_point_train_together(cli, tmp_path):
    out = tmp_path / "sweep"
    result = cli(["sweep", *TINY, "--train-frac", "0.5,0.8", "--seeds", "0,1", "--out", out])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "train-frac=0.5-seed1" / "summary.json").read_text())
    assert summary["trained_with"] == 2


@pytest.mark.parametrize("args, message", [
    (["--train-frac", "0.8:0.2:0.1"], "--train-frac: the range '0.8:0.2:0.1' is empty"),
    (["--train-frac", "0.5,1.5"], "train-frac=1.5: --train-frac must be in (0, 1), got 1.5"),
    (["--lr", "1e-3,abc"], "--lr: 'abc' is not a finite number"),
    (["--lr", "0:nan:0.1"], "--lr: 'nan' is not a finite number"),
    (["--lr", "0:inf:1"], "--lr: 'inf' is not a finite number"),
    (["--lr", "0.00001:1:0.00001", "--weight-decay", "0.00001:1:0.00001"],
     "the grid has 10,000,000,000 runs; at most 100,000"),
    (["--train-frac", "0.2:0.6"], "--train-frac: a range is lo:hi:step"),
    (["--train-frac", "0.2:0.6:0"], "--train-frac: a range's step must be > 0"),
    (["--seeds", "2-1"], "--seeds: a range runs upwards"),
    (["--threshold", "2"], "--threshold must be in (0, 1], got 2.0"),
])
def test_bad_grids_are_one_line_before_anything_trains(cli, tmp_path, args, message):
    out = tmp_path / "sweep"
    result = cli(["sweep", *TINY, *args, "--out", out])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(f"error: {message}"), result.stderr
    assert not out.exists()


def test_a_grid_file_with_an_unknown_key_is_refused(cli, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('seeds = "0"\n[fixed]\ntask = "modular"\n[grid]\n"modular.nope" = [1, 2]\n')
    result = cli(["sweep", grid, "--out", tmp_path / "out"])
    assert result.exit_code == 2 and "unknown setting '*.nope' in [grid]" in result.stderr
    grid.write_text('[grid]\n"modular.p" = []\n')
    result = cli(["sweep", grid, "--out", tmp_path / "out"])
    assert result.exit_code == 2 and "[grid] *.p is an empty list" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("grid = 5\n", "grid must be a table ([grid] with one setting a line), got 5"),
    ('fixed = "x"\n', "fixed must be a table ([fixed] with one setting a line), got 'x'"),
    ('[grid]\n"optim.lr" = [[0.1, 0.2]]\n', '[grid] optim.lr must be a list of values or a range string such as '
     '"0.2:0.6:0.1", got [[0.1, 0.2]]'),
    ('[grid]\n"optim.lr" = "0:nan:0.1"\n', "--lr: 'nan' is not a finite number"),
    ("threshold = true\n", "threshold must be in (0, 1], got True"),
    ("[fixed]\ntask = " + "9" * 5000 + "\n", "cannot parse GRID: an integer of over 4,300 digits, which no setting takes"),
])
def test_a_grid_file_of_the_wrong_shape_is_one_line(cli, tmp_path, text, message):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    result = cli(["sweep", grid, "--task", "modular", "--max-steps", "2", "--out", tmp_path / "out"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.replace("GRID", str(grid)) in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_flags_replace_a_grid_files_entries(cli, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('seeds = "0-1"\nthreshold = 0.5\n[fixed]\ntask = "modular"\n"modular.p" = 11\n'
                    '"train.max_steps" = 4\n[grid]\n"modular.train_frac" = "0.3:0.7:0.2"\n"modular.op" = ["add", "sub"]\n')
    by_key = {f.key: f for f in flags()}
    read = sw.read_grid_file(grid, by_key)
    assert [(a.name, a.values) for a in read.axes] == [("train-frac", [0.3, 0.5, 0.7]), ("op", ["add", "sub"])]
    assert (read.seeds, read.threshold, read.fixed["*.p"]) == ([0, 1], 0.5, 11)
    out = tmp_path / "out"
    result = cli(["sweep", grid, "--train-frac", "0.6", "--seeds", "0", "--width", "16", "--layers", "1",
                  "--heads", "2", "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["op=add-seed0", "op=sub-seed0"]
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["fixed"]["*.train_frac"] == 0.6 and manifest["threshold"] == 0.5


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_grids_open_with_their_command_and_resolve(path):
    assert path.read_text().splitlines()[0] == f"# grokrun sweep configs/sweeps/{path.name}"
    runs = sw.configs(sw.read_grid_file(path, {f.key: f for f in flags()}))
    assert len(runs) > 1 and len({name for _, name, _ in runs}) == len(runs)


def test_the_nanda_fraction_curve_is_the_nanda_run_at_each_fraction_with_the_softmax_their_code_computes():
    """configs/sweeps/nanda_fraction.toml, as its header states: configs/nanda_add.toml's run, with the softmax in
    float32 and stopping once test loss < 1e-2 and 99% test accuracy are met, at fractions 0.3 to 0.9 without a
    filter and with the EMA filter's own settings, seeds 0-2; its float64 command replaces the grid's fraction."""
    from dataclasses import asdict, replace

    from grokrun.config import resolve

    path = Path(__file__).parents[2] / "configs" / "sweeps" / "nanda_fraction.toml"
    by_key = {f.key: f for f in flags()}
    runs = sw.configs(sw.read_grid_file(path, by_key))
    nanda = resolve(Path(__file__).parents[2] / "configs" / "nanda_add.toml", {})
    assert len(runs) == 42
    points = {(cfg.filter.name, cfg.modular.train_frac, cfg.seed) for _, _, cfg in runs}
    assert points == {(f, frac, seed) for f in ("none", "ema") for frac in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
                      for seed in (0, 1, 2)}
    for _, _, cfg in runs:
        expected = replace(nanda, seed=cfg.seed, filter=resolve(None, {"filter.name": cfg.filter.name}).filter,
                           modular=replace(nanda.modular, train_frac=cfg.modular.train_frac),
                           train=replace(nanda.train, softmax_dtype="float32", stop_at_loss=0.01, stop_at_acc=0.99))
        assert asdict(cfg) == asdict(expected)
    ema = next(cfg for _, _, cfg in runs if cfg.filter.name == "ema")
    assert ema.filter.alpha == 0.98 and ema.filter.lamb == 2.0
    command = next(line for line in path.read_text().splitlines() if "--softmax-dtype float64" in line).split()
    assert command == ["#", "grokrun", "sweep", "configs/sweeps/nanda_fraction.toml", "--train-frac", "0.3",
                       "--softmax-dtype", "float64"]
    float64 = sw.configs(sw.grid_from(path, {"train_frac": "0.3", "softmax_dtype": "float64"}, None, None))
    assert {(cfg.modular.train_frac, cfg.train.softmax_dtype) for _, _, cfg in float64} == {(0.3, "float64")}
    assert len(float64) == 6  # both filters, three seeds


def test_the_fraction_curve_script_reads_both_criteria_and_marks_runs_that_did_not_get_there(make_run, tmp_path):
    """scripts/fraction_curve.py (the preset's figure): per filter and fraction, each seed's first evaluation with
    test loss below the target and with the test accuracy, in the order of the seeds, and their median; a run that
    did not get there counts as "≥ its steps", and as more than any that did in the median."""
    import subprocess
    import sys

    fast, slow = ([0.0, 0.5, 0.995, 0.999], [3.0, 0.9, 0.05, 0.02]), ([0.0, 0.2, 0.6, 0.992], [5.0, 3.0, 0.8, 0.5])
    for filt, frac, seed, (acc, loss) in [("none", 0.3, 0, slow), ("none", 0.3, 1, slow), ("none", 0.5, 0, fast),
                                          ("ema", 0.3, 2, slow), ("ema", 0.3, 0, fast), ("ema", 0.3, 1, fast),
                                          ("ema", 0.5, 0, fast)]:
        make_run(tmp_path / "sweep" / f"f{filt}{frac}-seed{seed}", seed=seed, filter=filt, val_acc=acc,
                 val_loss=loss, settings={"modular.train_frac": frac})
    done = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "scripts" / "fraction_curve.py"),
                           str(tmp_path / "sweep"), "--loss", "0.1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| none | 0.3 | ≥ 300 / ≥ 300 | ≥ 300 | 300 / 300 | 300 |" in done.stdout  # loss never < 0.1; 99% at 300
    assert "| none | 0.5 | 200 | 200 | 200 | 200 |" in done.stdout
    assert "| ema | 0.3 | 200 / 200 / ≥ 300 | 200 | 200 / 200 / 300 | 200 |" in done.stdout
    assert (tmp_path / "sweep" / "fraction_curve.png").stat().st_size > 10_000


@pytest.mark.parametrize("text, kind, values", [
    ("0.2:0.6:0.1", float, [0.2, 0.3, 0.4, 0.5, 0.6]),
    ("0.1:0.9:0.1", float, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
    ("1,4:6:1", int, [1, 4, 5, 6]),
    ("100:1000:300", int, [100, 400, 700, 1000]),
    ("1e-3,3e-3", float, [0.001, 0.003]),
    ("add,div,add", str, ["add", "div"]),
    ("0.5", float, [0.5]),
])
def test_values_and_ranges(text, kind, values):
    assert sw.parse_values(text, kind, "x") == values


def test_cells_take_censored_runs_as_bounds():
    """Per point, the median steps over seeds: a run that did not reach the threshold counts as more than the
    steps it ran (lower bound at them, upper at infinity), a diverged one as never."""
    def row(frac, seed, steps_to, steps=1000, status="completed"):
        return {"train-frac": frac, "seed": seed, "status": status, "steps": steps, "steps_to_val_0.99": steps_to,
                "best_val_acc": 1.0 if steps_to else 0.5}

    axes = [{"key": "*.train_frac", "name": "train-frac", "values": [0.3, 0.5, 0.7]}]
    table_rows = [row(0.3, 0, None), row(0.3, 1, None), row(0.3, 2, 800),
                  row(0.5, 0, 300), row(0.5, 1, 500), row(0.5, 2, None),
                  row(0.7, 0, 100), row(0.7, 1, 200), row(0.7, 2, None, steps=40, status="diverged")]
    cells = sweep_results.cells(table_rows, axes, 0.99)
    assert (cells[(0.3,)].lo, cells[(0.3,)].hi, cells[(0.3,)].reached) == (1000, math.inf, 1)
    assert (cells[(0.5,)].lo, cells[(0.5,)].hi) == (500, 500)  # median of 300, 500 and ≥ 1,000 is known
    assert (cells[(0.5,)].low, cells[(0.5,)].high) == (300, 500)
    assert (cells[(0.7,)].lo, cells[(0.7,)].hi) == (200, 200)  # diverged: never, above every other


def test_plot_on_a_sweep_folder_draws_the_sweep(cli, tmp_path):
    out = tmp_path / "sweep"
    assert cli(["sweep", *TINY, "--train-frac", "0.5,0.8", "--lr", "1e-3,3e-3", "--out", out]).exit_code == 0
    (out / "sweep_heatmap.png").unlink()
    result = cli(["plot", out])
    assert result.exit_code == 0, result.output
    assert (out / "sweep_heatmap.png").is_file() and "overlay" in result.stdout


def test_tensorboard_event_files_hold_the_metrics(cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = cli(["train", *TINY, "--tensorboard", "--out", tmp_path, "--name", "tb"])
    assert result.exit_code == 0, result.output
    board = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    board.Reload()
    with open(tmp_path / "tb" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val = [(e.step, e.value) for e in board.Scalars("val/acc")]
    assert val == [(int(r["step"]), pytest.approx(float(r["val_acc"]))) for r in rows]
    assert [e.step for e in board.Scalars("train/loss")] == [int(r["step"]) for r in rows if r["train_loss"]]


def test_tensorboard_without_the_package_is_one_line(cli, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result = cli(["train", *TINY, "--tensorboard", "--out", tmp_path / "runs"])
    assert result.exit_code == 2 and "pip install 'grokrun[tensorboard]'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_train_resume_on_a_sweep_folder_refreshes_its_table(cli, tmp_path, monkeypatch):
    from grokrun.filters import EMAFilter

    ctrl_c_at(monkeypatch, EMAFilter, 5)
    out = tmp_path / "cut"
    result = cli(["sweep", *TINY, "--filter", "ema", "--lr", "0.001,0.002", "--checkpoint-every", "2", "--out", out])
    assert result.exit_code == 130, result.output
    assert {r["status"] for r in table(out)} == {"interrupted"}
    monkeypatch.undo()
    resumed = cli(["train", "--resume", out])
    assert resumed.exit_code == 0, resumed.output
    assert "wrote " in resumed.output and {r["status"] for r in table(out)} == {"completed"}

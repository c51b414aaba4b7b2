"""grokrun compare through the CLI: variants x seeds, reuse of complete runs, tabulating existing runs, errors."""

import csv
import json

import pytest

from grokrun.settings import machine_cores


# A tiny modular problem: a few steps per run keep these tests fast; what they check is the bookkeeping.
TINY = ["--op", "add", "--p", "11", "--train-frac", "0.8", "--width", "32", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--max-steps", "12", "--eval-every", "4", "--quiet"]


def compare(cli, *args):
    result = cli(["compare", *args])
    assert "Traceback" not in result.output, result.output
    return result


def table_rows(folder):
    with open(folder / "comparison.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_compare_trains_every_variant_and_seed_then_reuses_them(cli, tmp_path):
    out = tmp_path / "cmp"
    result = compare(cli, "--task", "modular", "--filter", "ema", "--filter", "ma", "--seeds", "0,1", "--out", str(out),
                     *TINY)
    assert result.exit_code == 0, result.output
    assert "6 runs to train, 0 already complete and reused" in result.stdout
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["baseline-seed0", "baseline-seed1", "ema-seed0", "ema-seed1", "ma-seed0", "ma-seed1"]
    for name in runs:
        cfg = json.loads((out / name / "config.json").read_text())
        assert cfg["train"]["max_steps"] == 12 and cfg["modular"]["p"] == 11  # overrides reach every variant
        assert cfg["seed"] == int(name[-1]) and cfg["filter"]["name"] == {"baseline": "none"}.get(name[:-6], name[:-6])
    ema = json.loads((out / "ema-seed0" / "config.json").read_text())
    assert (ema["filter"]["alpha"], ema["filter"]["lamb"], ema["optim"]["weight_decay"]) == (0.98, 2.0, 0.005)
    assert [r["variant"] for r in table_rows(out)] == ["baseline", "ema", "ma"]
    assert {p.name for p in out.iterdir() if p.is_file()} == {
        ".grokrun.lock", "compare.json", "comparison.md", "comparison.csv", "comparison.png",
        "report.html"}  # (the lock: held while running)
    assert json.loads((out / "compare.json").read_text())["seeds"] == [0, 1]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}

    again = compare(cli, "--task", "modular", "--filter", "ema", "--filter", "ma", "--seeds", "0,1", "--out", str(out),
                    *TINY)
    assert again.exit_code == 0, again.output
    assert "0 runs to train, 6 already complete and reused" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == stamps  # nothing retrained

    more = compare(cli, "--task", "modular", "--filter", "ema", "--filter", "ma", "--seeds", "0,1,2", "--out", str(out),
                   *TINY)
    assert "3 runs to train, 6 already complete and reused" in more.stdout
    assert {r["runs"] for r in table_rows(out)} == {"3"}


def test_an_unfinished_run_is_resumed_or_trained_again(cli, tmp_path):
    out = tmp_path / "cmp"
    assert compare(cli, "--filter", "ema", "--seeds", "0", "--out", str(out), *TINY).exit_code == 0
    summary = out / "ema-seed0" / "summary.json"
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "status": "interrupted", "steps": 5}))
    (out / "baseline-seed0" / "summary.json").unlink()  # as if killed before its first checkpoint
    (out / "baseline-seed0" / "checkpoint.pt").unlink()
    result = compare(cli, "--filter", "ema", "--seeds", "0", "--out", str(out), *TINY)
    assert "1 run to train, 1 to resume, 0 already complete and reused" in result.stdout
    assert json.loads(summary.read_text())["status"] == "completed"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["baseline-seed0", "ema-seed0"]


def test_config_files_are_variants_named_after_them(cli, tmp_path):
    (tmp_path / "plain.toml").write_text('task = "modular"\n')
    (tmp_path / "fast.toml").write_text('task = "modular"\n[filter]\nname = "ema"\nlamb = 3.0\n')
    out = tmp_path / "cmp"
    result = compare(cli, str(tmp_path / "plain.toml"), str(tmp_path / "fast.toml"), "--seeds", "0", "--out", str(out),
                     *TINY)
    assert result.exit_code == 0, result.output
    assert [r["variant"] for r in table_rows(out)] == ["plain", "fast"]  # the first file is the baseline
    assert json.loads((out / "fast-seed0" / "config.json").read_text())["filter"]["lamb"] == 3.0


def test_same_command_again_continues_the_newest_matching_comparison(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda *a: "20260101-000000")  # all in one second
    first = compare(cli, "--filter", "ema", "--seeds", "0", *TINY)
    assert first.exit_code == 0, first.output
    folders = list((tmp_path / "results").glob("compare-modular-*"))
    assert len(folders) == 1
    second = compare(cli, "--filter", "ema", "--seeds", "0", *TINY)
    assert f"in {folders[0].relative_to(tmp_path)} (continuing the comparison found there" in second.stdout
    assert "0 runs to train, 2 already complete and reused" in second.stdout
    manifest = json.loads((folders[0] / "compare.json").read_text())  # as saved before a setting existed
    for variant in manifest["variants"]:
        del variant["settings"]["train"]["eval_points"]
    (folders[0] / "compare.json").write_text(json.dumps(manifest))
    third = compare(cli, "--filter", "ema", "--seeds", "0", *TINY)
    assert "0 runs to train, 2 already complete and reused" in third.stdout
    other = compare(cli, "--filter", "ma", "--seeds", "0", *TINY)  # other variants: a new folder
    assert "in results/compare-modular-20260101-000000-2\n" in other.stdout and "2 runs to train" in other.stdout
    assert len(list((tmp_path / "results").glob("compare-modular-*"))) == 2


@pytest.mark.slow
def test_parallel_jobs(cli, tmp_path):
    out = tmp_path / "cmp"
    result = compare(cli, "--filter", "ema", "--seeds", "0,1", "--jobs", "2", "--threads", "1", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("[") and "seed" in line for line in result.stdout.splitlines()) == 4
    assert all(json.loads(p.read_text())["status"] == "completed" for p in out.glob("*/summary.json"))
    assert len(list(out.glob("*/summary.json"))) == 4
    assert "2 runs trained at once" in result.stdout


def test_more_jobs_than_the_cores_hold_are_refused_before_anything_is_written(cli, tmp_path):
    """A launcher never changes a run's threads (its numbers would change with them): --jobs N runs of T threads
    each must fit the machine's cores, or the command says what to give instead."""
    cores = machine_cores()
    for command in (["compare", "--filter", "ema", "--seeds", "0,1"], ["sweep", "--lr", "0.001,0.002"]):
        result = cli([*command, *TINY, "--jobs", str(cores + 1), "--threads", "1", "--out", tmp_path / "x"])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"error: --jobs {cores + 1} at 1 thread per run needs {cores + 1} cores and this machine has {cores}: "
            f"use --jobs {cores}"]
        result = cli([*command, *TINY, "--jobs", "2", "--threads", str(cores), "--out", tmp_path / "x"])
        assert result.exit_code == 2, result.output
        fix = f"add --threads {cores // 2} (each run's own count, in its config.json) or " if cores >= 2 else ""
        assert result.stderr.strip().splitlines() == [
            f"error: --jobs 2 at {cores} thread{'s' * (cores != 1)} per run needs {2 * cores} cores and this machine "
            f"has {cores}: {fix}use --jobs 1"]
        assert not (tmp_path / "x").exists()


def test_a_compare_threshold_is_in_each_runs_summary(cli, tmp_path):
    out = tmp_path / "cmp"
    result = compare(cli, "--filter", "ema", "--seeds", "0", "--threshold", "0.3", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    summaries = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    assert len(summaries) == 2
    for s in summaries:
        assert set(s["steps_to_val_acc"]) == {"0.3", "0.5", "0.9", "0.95", "0.99"}
        assert set(s["steps_to_train_acc"]) == set(s["wall_s_to_val_acc"]) == set(s["steps_to_val_acc"])
    again = compare(cli, "--filter", "ema", "--seeds", "0", "--threshold", "0.35", "--out", str(out), *TINY)  # reused runs get it too
    assert again.exit_code == 0 and "already complete and reused" in again.stdout
    assert all("0.35" in json.loads(p.read_text())["steps_to_val_acc"] for p in out.glob("*/summary.json"))


def test_tabulating_existing_run_directories(cli, tmp_path, make_run):
    runs = tmp_path / "runs"
    for seed in range(3):
        make_run(runs / f"none-seed{seed}", seed=seed, val_acc=[0.0, 0.5, 0.6])
        make_run(runs / f"ema-seed{seed}", seed=seed, filter="ema", val_acc=[0.0, 0.5, 0.96])
    (runs / "scratch").mkdir()
    result = compare(cli, str(runs))
    assert result.exit_code == 0, result.output
    assert "not a run directory" in result.stderr and "scratch" in result.stderr
    rows = table_rows(runs)
    assert [(r["variant"], r["reached"]) for r in rows] == [("none", "0"), ("ema", "3")]
    assert float(rows[1]["speedup_steps_lo"]) == 1.0 and rows[1]["speedup_steps_hi"] == "inf"  # > 200 / 200
    assert "≥ 1×" in result.stdout and (runs / "comparison.md").is_file() and (runs / "comparison.png").is_file()
    single = compare(cli, str(runs / "ema-seed0"), str(runs / "ema-seed1"))  # several paths and no --out: print only
    assert single.exit_code == 0 and "not saved: give --out DIR" in single.stdout


BAD = [
    (["--seeds", "a,b"], "--seeds must be seeds or ranges such as 0,1,2 or 0-15, got 'a,b'"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--filter", "kalman"], "unknown filter 'kalman'; choose one of: none, ema, ma, orthograd, or several in order, comma-separated (orthograd,ema; in a sweep's list, orthograd+ema)"),
    (["--task", "chess"], "unknown task 'chess'; choose one of: modular"),
    (["--p", "1"], "--p must be >= 2, got 1"),
    (["--threshold", "1.5"], "--threshold must be in (0, 1], got 1.5"),
    (["--format", "gif"], "unknown format 'gif'; choose one of: png, svg, pdf"),
    (["a.toml", "--filter", "ema"], "give config files or --filter, not both"),
    (["a.toml", "folder"], "give config files or run directories, not both"),
    (["missing.toml"], "no such config file or run directory: missing.toml"),
    (["folder", "--max-steps", "5"], "--max-steps applies to training; run directories are tabulated as they are"),
    (["folder", "--seeds", "0"], "--seeds applies to training"),
    (["folder"], "no run directories in folder"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input(cli, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.toml").write_text('task = "modular"\n')
    (tmp_path / "folder").mkdir()
    result = compare(cli, *args, "--quiet")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_a_folder_holding_other_settings_is_refused(cli, tmp_path):
    out = tmp_path / "cmp"
    assert compare(cli, "--filter", "ema", "--seeds", "0", "--out", str(out), *TINY).exit_code == 0
    result = compare(cli, "--filter", "ema", "--seeds", "0", "--out", str(out), *TINY, "--max-steps", "20")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {out / 'baseline-seed0'} was trained with train.max_steps = 12, "
                                     "this comparison asks for 20; choose another --out")


@pytest.mark.parametrize("command", ["compare", "plot"])
def test_reading_runs_imports_neither_torch_nor_a_task(cli, command, tmp_path, make_run):
    import subprocess
    import sys

    for seed in range(2):
        make_run(tmp_path / f"none-seed{seed}", seed=seed, val_acc=[0.0, 0.5, 0.6])
    code = (f"import sys\nfrom grokrun.cli import app\ntry:\n    app([{command!r}, {str(tmp_path)!r}])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "loaded = [m for m in ('torch', 'torch_geometric', 'grokrun.models', 'grokrun.engine.run') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ctrl_c_stops_the_comparison_and_the_same_command_continues_it(cli, tmp_path, monkeypatch):
    import os
    import signal

    from grokrun.filters import GradFilter

    calls = {"n": 0}
    original = GradFilter.apply

    def apply(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 15:  # Ctrl-C in step 3 of the second run (the first has 12)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(GradFilter, "apply", apply)
    out = tmp_path / "cmp"
    args = ["--filter", "ema", "--seeds", "0,1", "--no-batch", "--out", str(out), *TINY]  # one after another
    result = compare(cli, *args)
    assert result.exit_code == 130, result.output
    assert "[2/4] baseline seed 1: interrupted at step 3;" in result.stdout
    assert "seed 1 interrupted at step 3" in (out / "comparison.md").read_text()  # the notes column
    assert f"interrupted: the same command continues the comparison in {out}" in result.stdout
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["baseline-seed0", "baseline-seed1"]
    assert [r["statuses"] for r in table_rows(out)] == ["completed:1;interrupted:1"]

    monkeypatch.setattr(GradFilter, "apply", original)
    again = compare(cli, *args)
    assert again.exit_code == 0, again.output
    assert "2 runs to train, 1 to resume, 1 already complete and reused" in again.stdout  # resumed, not redone
    assert [r["statuses"] for r in table_rows(out)] == ["completed:2", "completed:2"]
    fresh = tmp_path / "fresh"
    assert compare(cli, "--filter", "none", "--seeds", "1", "--out", str(fresh), *TINY).exit_code == 0
    assert (out / "baseline-seed1" / "metrics.csv").read_text().split("\n")[0] == \
        (fresh / "baseline-seed1" / "metrics.csv").read_text().split("\n")[0]
    strip = [line.split(",", 2)[0::2] for line in (out / "baseline-seed1" / "metrics.csv").read_text().splitlines()]
    clean = [line.split(",", 2)[0::2] for line in (fresh / "baseline-seed1" / "metrics.csv").read_text().splitlines()]
    assert strip == clean  # the resumed run equals one never interrupted (wall_s aside)

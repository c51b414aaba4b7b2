"""Random values for every numeric flag, and random bytes as config files: grokrun answers with exit 0, 1
(diverged) or 2 (bad input), never a traceback, and never leaves a run directory without its summary."""

import dataclasses
import random

import pytest

from grokrun.config import SECTIONS, TASK_SECTIONS
from grokrun.flags import flags

# Each case trains at most 2 steps of a tiny model, so the values that pass validation cost little.
TINY = ["--op", "add", "--p", "11", "--train-frac", "0.8", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "1", "--max-steps", "2", "--quiet"]
VALUES = ["0", "-1", "-7", "nan", "inf", "-inf", "1e30", "-1e30", str(2**64), "99999999999999999999", "abc", "",
          "0.5", "3", "1e-3", "0x10", " 2"]
NUMERIC = [f for f in flags() if f.type in (int, float)]


def task_args(flag, tmp_path) -> list[str]:
    """The smallest command a flag applies to: the tiny modular run, or another task pointed at no data."""
    if not flag.key.startswith("*."):
        return ["--task", "modular", *TINY]
    name = flag.key[2:]
    owner = next(t for t in TASK_SECTIONS if name in {f.name for f in dataclasses.fields(SECTIONS[t])})
    if owner == "modular":
        return ["--task", "modular", *TINY]
    return ["--task", owner, "--data-dir", str(tmp_path / "no-data"), "--no-download", "--max-steps", "2", "--quiet"]


def fuzz_files(tmp_path, rng, count: int, most_bytes: int, suffixes: list[str], stem: str,
               texts: dict[str, list[str]]) -> list:
    """``count`` files of random bytes (up to ``most_bytes``, each with one of ``suffixes``), then one file
    ``<stem><i>.<suffix>`` per text of ``texts[suffix]``: their paths, in that order."""
    files = []
    for i in range(count):
        suffix = rng.choice(suffixes) if len(suffixes) > 1 else suffixes[0]
        path = tmp_path / f"random{i}.{suffix}"
        path.write_bytes(rng.randbytes(rng.randint(0, most_bytes)))
        files.append(path)
    for suffix, written in texts.items():
        for i, text in enumerate(written):
            files.append(tmp_path / f"{stem}{i}.{suffix}")
            files[-1].write_text(text)
    return files


def check(result, out):
    """The answer a user may get: exit 0, 1 or 2, no traceback (the cli fixture raises on one), and every
    run directory written complete; after exit 2, none written at all."""
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    runs = [p for p in out.rglob("config.json")] if out.exists() else []
    if result.exit_code == 2:
        assert runs == [], result.output
        if "Usage:" not in result.output:  # typer's own type errors come in its usage box; grokrun's in one line
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    else:
        assert runs and all((p.parent / "summary.json").is_file() for p in runs), result.output


@pytest.mark.slow
def test_every_numeric_flag_with_every_kind_of_value(cli, tmp_path):
    """About 700 commands: each numeric flag of train with each value, alone, then random pairs of them."""
    rng = random.Random(0)
    cases = [[(flag, value)] for flag in NUMERIC for value in VALUES]
    cases += [[(rng.choice(NUMERIC), rng.choice(VALUES)) for _ in range(rng.randint(2, 3))] for _ in range(120)]
    for i, case in enumerate(cases):
        out = tmp_path / f"case{i}"
        args = task_args(case[0][0], tmp_path) + ["--filter", rng.choice(["ema", "ma"]), "--out", str(out)]
        for flag, value in case:
            if flag.key.startswith("*.") and task_args(flag, tmp_path)[1] != args[1]:
                continue  # an option of another task: refused by name, tested elsewhere
            args += [f"--{flag.name}", value]
        check(cli(["train", *args]), out)


def test_random_bytes_and_wrong_types_as_config_files(cli, tmp_path):
    files = fuzz_files(tmp_path, random.Random(1), 150, 300, ["toml", "json"], "typed", {"toml": [
        'task = [1]', 'task = "modular"\n[filter]\nname = 3', '[train]\nmax_steps = 1979-05-27',
        '[optim]\nlr = nan', '[optim]\nlr = inf', 'seed = -1', 'seed = 99999999999999999999',
        '[modular]\nwidth = 99999999', '[filter]\nname = "ma"\nwindow_size = 0', 'filter = "ema"', '[[train]]',
        '[modular]\nop = {a = 1}', 'name = ".."', 'name = "a/b"', 'out = ""', 'device = "tpu"',
    ], "json": ['[]', '"modular"', '{"filter": {"name": ["ema"]}}', '{"train": {"max_steps": true}}',
                '{"optim": {"lr": "1e-3"}}', '{"seed": 1.5}', '{"modular": null}', '{"task": null}']})
    for i, path in enumerate(files):
        out = tmp_path / f"out{i}"
        check(cli(["train", "--config", str(path), "--max-steps", "2", "--quiet", "--out", str(out)]), out)


def test_compare_and_plot_with_random_values(cli, tmp_path, make_run):
    rng = random.Random(2)
    seeds = ["0", "-1", "", " ", "a", "0,,1", "1,1", "99999999999999999999", "0;1", "nan"]
    thresholds = ["0", "-1", "nan", "inf", "1", "0.5", "2", "abc", "1e30"]
    for i, seed_list in enumerate(seeds * 3):  # each seed list, with other values at random
        out = tmp_path / f"cmp{i}"
        args = ["compare", "--filter", "ema", *TINY, "--out", str(out), "--seeds", seed_list,
                "--threshold", rng.choice(thresholds), "--jobs", rng.choice(["1", "0", "-3", "x"])]
        flag = rng.choice(NUMERIC)
        if not flag.key.startswith("*.") and flag.name not in ("seed", "out", "name"):
            args += [f"--{flag.name}", rng.choice(VALUES)]
        check(cli(args), out)
    for seed in range(2):
        make_run(tmp_path / "runs" / f"ema-seed{seed}", seed=seed, filter="ema", val_acc=[0.0, 0.5, 0.9])
    for threshold in thresholds:
        for fmt in ("png", "svg", "jpeg", ""):
            result = cli(["plot", str(tmp_path / "runs"), "--threshold", threshold, "--format", fmt])
            assert result.exit_code in (0, 2) and "Traceback" not in result.output


# Sweep values: lists and ranges, valid ones of at most three values (each case trains at most a few tiny runs).
GRID_VALUES = ["0.1,0.2", "1,2", "0:1:0.5", "1:0:1", "a:b:c", ":::", "0:nan:1", "0:inf:1", "inf:1:1", "", ",",
               "1,,2", "0:1", "0:1:0", "0:1:-1", "1e30", "-1", "nan", "2,2", "0x10", " 1", "1:3:1"]
SWEEPABLE = [f for f in NUMERIC if not f.key.startswith("*.") and f.name not in ("seed", "out", "name")]


def check_sweep(result, out):
    """As check, and after exit 2 not even the folder (a sweep refuses before it writes)."""
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    if result.exit_code == 2:
        assert not out.exists() or not any(out.rglob("config.json")), result.output
    check(result, out)


def test_sweep_grids_with_random_values(cli, tmp_path):
    rng = random.Random(3)
    for i in range(60):
        out = tmp_path / f"sweep{i}"
        args = ["sweep", "--task", "modular", *TINY, "--out", str(out)]
        flag = rng.choice(SWEEPABLE)
        args += [f"--{flag.name}", rng.choice(GRID_VALUES)]
        if flag.name != "lr":  # half of them with an axis that trains, so the runs that pass are checked too
            args += ["--lr", rng.choice(["0.001,0.002", *GRID_VALUES])]
        if rng.random() < 0.3:
            args += ["--seeds", rng.choice(["0", "0-1", "1--2", "", "x", "2-1"])]
        if rng.random() < 0.3:
            args += ["--threshold", rng.choice(["0", "nan", "2", "0.5", "abc"])]
        check_sweep(cli(args), out)


def test_random_bytes_and_wrong_shapes_as_grid_files(cli, tmp_path):
    files = fuzz_files(tmp_path, random.Random(4), 40, 200, ["toml"], "shaped", {"toml": [
        "grid = 5", 'fixed = "x"', '[grid]\n"optim.lr" = [[0.1]]', '[grid]\n"optim.lr" = {a = 1}',
        '[grid]\n"optim.lr" = []', '[grid]\n"optim.lr" = "0:nan:1"', "seeds = [0, 1]", "seeds = -1",
        "threshold = true", 'threshold = "high"', "[grid]\nnope = [1, 2]", "[fixed]\ntask = 5",
        '[fixed]\ntask = "nope"', "[fixed]\n" + "a = 1\n" * 3, "surprise = 1", "[grid]\n[grid.x]\ny = 1",
        "[fixed]\ntask = " + "9" * 5000,
    ]})
    for i, path in enumerate(files):
        out = tmp_path / f"out{i}"
        check_sweep(cli(["sweep", str(path), "--task", "modular", *TINY, "--out", str(out)]), out)


def test_analyze_with_damaged_inputs(cli, tmp_path):
    rng = random.Random(5)
    assert cli(["train", "--task", "modular", *TINY, "--snapshots", "1", "--out", tmp_path, "--name", "r"]).exit_code == 0
    run = tmp_path / "r"
    from grokrun import snapshots

    good = {step: snapshots.path(run, step).read_bytes() for step in snapshots.saved_steps(run)}
    config = (run / "config.json").read_text()
    damages = [
        lambda: snapshots.path(run, 1).write_bytes(rng.randbytes(rng.randint(0, 500))),
        lambda: snapshots.path(run, 1).write_bytes(good[1][: rng.randint(0, len(good[1]))]),
        lambda: (run / "config.json").write_bytes(rng.randbytes(rng.randint(0, 200))),
        lambda: (run / "config.json").write_text(config.replace('"p": 11', f'"p": {rng.choice([13, -1, 0, 10**6])}')),
        lambda: (run / "config.json").write_text(config.replace('"op": "add"', '"op": "nope"')),
        lambda: (run / "checkpoint.pt").write_bytes(rng.randbytes(100)),
    ]
    checkpoint_bytes = (run / "checkpoint.pt").read_bytes()
    for i in range(24):
        damages[i % len(damages)]()
        result = cli(["analyze", str(run if i % 3 else tmp_path)])
        assert result.exit_code in (0, 2) and "Traceback" not in result.output, result.output
        if result.exit_code == 2:  # one error line, after a warning for each run of a folder it skipped
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert lines[-1].startswith("error: ") and all(line.startswith("warning: ") for line in lines[:-1])
        for step, data in good.items():  # repaired for the next case
            snapshots.path(run, step).write_bytes(data)
        (run / "config.json").write_text(config)
        (run / "checkpoint.pt").write_bytes(checkpoint_bytes)
    for arg in [run / "config.json", tmp_path / "missing", run / "snapshots"]:
        result = cli(["analyze", str(arg)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output

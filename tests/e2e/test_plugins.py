"""A researcher's own task, filter, loss and optimizer, from a file of their own (docs/extending.md's plugin,
run as the page gives it) or from an installed package's entry points, through every command; and the one-line
refusals of a bad plugin."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ctrl_c_at

DOCS = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
SMALL = ["--task", "majority", "--max-steps", "120", "--quiet"]


def plugin_source() -> str:
    """The complete plugin of docs/extending.md: its one python block."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "my_plugin.py"
    path.write_text(plugin_source())
    return path


def summary(run):
    return json.loads((run / "summary.json").read_text())


def metrics(run):
    """metrics.csv without the wall-clock column."""
    lines = (run / "metrics.csv").read_text().splitlines()
    keep = [i for i, name in enumerate(lines[0].split(",")) if name != "wall_s"]
    return [[line.split(",")[i] for i in keep] for line in lines]


def test_the_plugin_of_the_docs_trains_with_its_task_filter_loss_and_optimizer(cli, plugin, tmp_path):
    result = cli(["train", "--plugin", plugin, *SMALL, "--filter", "heavyball", "--hb-gain", "1.0", "--loss", "hinge",
                  "--out", tmp_path / "r", "--name", "mine"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "r" / "mine"
    config = json.loads((run / "config.json").read_text())
    assert config["plugins"] == [str(plugin.resolve())]
    assert config["filter"]["hb_gain"] == 1.0 and config["filter"]["hb_beta"] == 0.9
    assert config["majority"]["loss"] == "hinge" and "modular" not in config
    s = summary(run)
    assert s["title"]["task"] == "majority: 3 of 12 bits, 512 samples, 50% train"
    assert s["title"]["variant"].startswith("heavyball hb_beta=0.9 hb_gain=1")
    assert s["best_val_acc"] >= 0.9, s  # majority of 3 bits: it must learn
    # the same config again, from its config.json alone: the same numbers
    again = cli(["train", "--config", run / "config.json", "--out", tmp_path / "r", "--name", "again", "--quiet"])
    assert again.exit_code == 0, again.output
    assert metrics(run) == metrics(tmp_path / "r" / "again")
    # its optimizer, and a built-in task taking its loss
    result = cli(["train", "--plugin", plugin, *SMALL, "--optimizer", "nesterov", "--lr", "0.05",
                  "--out", tmp_path / "r", "--name", "nesterov"])
    assert result.exit_code == 0 and summary(tmp_path / "r" / "nesterov")["status"] == "completed", result.output
    result = cli(["train", "--plugin", plugin, "--task", "parity", "--n-bits", "8", "--samples", "64", "--loss",
                  "hinge", "--max-steps", "5", "--quiet", "--out", tmp_path / "r", "--name", "parity"])
    assert result.exit_code == 0, result.output
    result = cli(["train", "--plugin", plugin, "--task", "modular", "--loss", "hinge", "--out", tmp_path / "r"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown loss 'hinge' for task modular; choose one of: ce, stablemax, mse"


def test_a_config_file_names_its_plugins_relative_to_itself(cli, plugin, tmp_path, monkeypatch):
    preset = tmp_path / "majority_heavyball.toml"
    preset.write_text('plugins = ["my_plugin.py"]\ntask = "majority"\n[filter]\nname = "heavyball"\nhb_gain = 2.0\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # run from another folder: the path is the file's, not the working directory's
    result = cli(["train", "--config", preset, "--hb-beta", "0.5", "--max-steps", "5", "--quiet", "--out", "r"])
    assert result.exit_code == 0, result.output
    config = json.loads((elsewhere / "r" / "majority-heavyball-seed0" / "config.json").read_text())
    assert config["plugins"] == [str(plugin.resolve())]
    assert (config["filter"]["hb_gain"], config["filter"]["hb_beta"]) == (2.0, 0.5)


def test_help_lists_the_plugin_beside_the_built_ins(cli, plugin):
    result = cli(["train", "--plugin", plugin, "--help"])
    assert result.exit_code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # (the help's boxes and line breaks gone)
    assert "--hb-gain" in text and "--n-bits" in text
    assert re.search(r"One of: modular, mnist, imdb, qm9, parity, xor, majority", text)
    assert re.search(r"One of: none, ema, ma, orthograd, heavyball", text)
    assert re.search(r"One of: adam, adamw, sgd, muon, nesterov", text)
    from grokrun import plugins

    plugins.reset()  # (as a new process starts): without --plugin, none of it
    plain = cli(["train", "--help"])
    assert "--hb-gain" not in plain.output and "heavyball" not in plain.output


def test_compare_sweep_and_plot_over_the_plugin(cli, plugin, tmp_path):
    result = cli(["compare", "--plugin", plugin, *SMALL, "--filter", "heavyball", "--seeds", "0,1",
                  "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "cmp").iterdir() if p.is_dir()} >= {"baseline-seed0", "heavyball-seed1"}
    assert "heavyball" in (tmp_path / "cmp" / "comparison.md").read_text()
    result = cli(["sweep", "--plugin", plugin, *SMALL, "--filter", "heavyball", "--hb-gain", "0.5,2",
                  "--out", tmp_path / "sw"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()
    assert len(table) == 3 and table[0].startswith("hb-gain,")
    assert summary(tmp_path / "sw" / "hb-gain=2-seed0")["title"]["variant"].startswith("heavyball hb_beta=0.9 hb_gain=2")
    again = cli(["sweep", "--plugin", plugin, *SMALL, "--filter", "heavyball", "--hb-gain", "0.5,2",
                 "--out", tmp_path / "sw"])
    assert again.exit_code == 0 and "0 runs to train" in again.output, again.output
    result = cli(["plot", tmp_path / "sw"])
    assert result.exit_code == 0 and (tmp_path / "sw" / "hb-gain=0.5-seed0" / "accuracy.png").is_file(), result.output


def test_an_interrupted_plugin_run_resumes_to_the_uninterrupted_numbers(cli, plugin, tmp_path):
    args = ["--plugin", plugin, *SMALL, "--filter", "heavyball", "--loss", "hinge", "--checkpoint-every", "10",
            "--out", tmp_path]
    whole = cli(["train", *args, "--name", "whole"])
    assert whole.exit_code == 0, whole.output
    from grokrun.plugins import registries

    heavyball = registries()["filter"]["heavyball"]  # the class the plugin registered in this process
    with pytest.MonkeyPatch.context() as patch:
        ctrl_c_at(patch, heavyball, 55)
        cut = cli(["train", *args, "--name", "cut"])
    assert cut.exit_code == 130 and summary(tmp_path / "cut")["status"] == "interrupted", cut.output
    resumed = cli(["train", "--resume", tmp_path / "cut", "--quiet"])  # no --plugin: config.json names it
    assert resumed.exit_code == 0, resumed.output
    assert summary(tmp_path / "cut")["status"] == "completed"
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


def test_seeds_of_the_plugin_task_stack_and_equal_seeds_alone(cli, plugin, tmp_path):
    base = ["--plugin", plugin, *SMALL, "--filter", "heavyball", "--dtype", "float64", "--out", tmp_path]
    assert cli(["train", *base, "--seeds", "0,1", "--name", "stack"]).exit_code == 0
    assert cli(["train", *base, "--seed", "1", "--name", "alone"]).exit_code == 0
    assert summary(tmp_path / "stack" / "seed1")["trained_with"] == 2
    stacked, alone = metrics(tmp_path / "stack" / "seed1"), metrics(tmp_path / "alone")
    for a, b in zip(stacked[1:], alone[1:]):
        assert all(x == y or abs(float(x) - float(y)) <= 1e-9 for x, y in zip(a, b) if x or y)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_a_ray_sweep_worker_loads_the_plugin(cli, plugin, tmp_path):
    pytest.importorskip("ray")
    result = cli(["sweep", "--plugin", plugin, *SMALL, "--max-steps", "30", "--filter", "heavyball",
                  "--hb-gain", "0.5,2", "--backend", "ray", "--out", tmp_path / "ray"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "ray" / "sweep.csv").read_text().splitlines()) == 3
    assert summary(tmp_path / "ray" / "hb-gain=2-seed0")["status"] == "completed"


def test_the_same_entries_from_an_installed_package(tmp_path):
    """A distribution's entry points register the plugin's task, filter, loss and optimizer: no --plugin."""
    site = tmp_path / "site"
    (site / "grokrun_majority-0.1.dist-info").mkdir(parents=True)
    (site / "grokrun_majority.py").write_text(plugin_source())
    (site / "grokrun_majority-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: grokrun-majority\nVersion: 0.1\n")
    (site / "grokrun_majority-0.1.dist-info" / "entry_points.txt").write_text(
        "[grokrun.tasks]\nmajority = grokrun_majority\n[grokrun.filters]\nheavyball = grokrun_majority:HeavyBall\n"
        "[grokrun.losses]\nhinge = grokrun_majority:HingeLoss\n[grokrun.optimizers]\nnesterov = grokrun_majority:nesterov\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "grokrun", "train", *SMALL, "--filter", "heavyball", "--loss", "hinge",
                             "--optimizer", "nesterov", "--lr", "0.05", "--max-steps", "20", "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads((tmp_path / "r" / "majority-heavyball-seed0" / "config.json").read_text())
    assert config["plugins"] == [] and config["filter"]["hb_gain"] == 0.5 and config["optim"]["name"] == "nesterov"


BAD = {
    "syntax": ("def broken(:\n", "cannot import it: SyntaxError: invalid syntax (line 1)"),
    "missing": ("from grokrun.filters import GradFilter\n\nclass Lazy(GradFilter):\n    name = 'lazy'\n",
                "filter lazy is missing _filter (or apply): it would leave every gradient as it is"),
    "clash": ("from grokrun.filters import GradFilter\n\nclass Ema(GradFilter):\n    name = 'ema'\n"
              "    def _filter(self, keys, grads, amplify):\n        pass\n",
              "filter name 'ema' is taken (by grokrun itself); rename it"),
    "undocumented": ("from dataclasses import dataclass\nfrom grokrun.filters import GradFilter\n\n"
                     "class Loud(GradFilter):\n    name = 'loud'\n    @dataclass\n    class Settings:\n"
                     "        volume: float = 1.0\n    def _filter(self, keys, grads, amplify):\n        pass\n",
                     "filter loud has a setting 'volume' without a docstring under it (it becomes the flag's --help)"),
    "task": ("NAME = 'half'\ndef build(cfg, device, dtype):\n    pass\n",
             "task half is missing Options, DEFAULTS, PRESETS, validate, describe, build_model (a task module defines "
             "NAME, Options, DEFAULTS, PRESETS, validate, describe, build_model, build)"),
    "empty": ("x = 1\n", "defines no task, filter, loss or optimizer (see docs/extending.md)"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_plugin_is_one_line_and_writes_nothing(cli, tmp_path, kind):
    source, problem = BAD[kind]
    path = tmp_path / f"{kind}.py"
    path.write_text(source)
    out = tmp_path / "out"
    result = cli(["train", "--plugin", path, "--max-steps", "2", "--out", out])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: plugin {path.resolve()}: {problem}", result.stderr
    assert not out.exists()
    result = cli(["train", "--plugin", tmp_path / "absent.py", "--out", out])
    assert result.exit_code == 2 and "no such Python file" in result.stderr and not out.exists()

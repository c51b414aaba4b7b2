"""--optimizer NAME for pytorch_optimizer's optimizers (the test extra installs the library)."""

import pytest

from grokrun import optimizer_library
from grokrun.config import resolve
from grokrun.engine.run import Run

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--max-steps", "8", "--quiet"]


def test_a_library_optimizer_gets_the_arguments_asked_for():
    cfg = resolve(None, {"task": "modular", "modular.p": 11, "optim.name": "lion", "optim.lr": 2e-4,
                         "optim.weight_decay": 0.1, "optim.optimizer_args": "betas = [0.95, 0.98], weight_decouple = false"})
    group = Run([cfg]).optimizer.param_groups[0]
    assert type(Run([cfg]).optimizer).__name__ == "Lion"
    assert group["betas"] == (0.95, 0.98) and group["weight_decouple"] is False  # not the library's defaults
    assert group["weight_decay"] == 0.1 and group["initial_lr"] == 2e-4
    fast = resolve(None, {"task": "modular", "modular.p": 11, "optim.name": "GrokFastAdamW",
                          "optim.optimizer_args": "grokfast_lamb = 5.0"})
    assert Run([fast]).optimizer.param_groups[0]["grokfast_lamb"] == 5.0


def test_it_trains_by_name_recorded_in_config_json_and_its_seeds_one_after_another(cli, tmp_path):
    import json

    result = cli(["train", *TINY, "--optimizer", "lion", "--lr", "1e-4", "--optimizer-args", "betas = [0.9, 0.9]",
                  "--seeds", "0,1", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    assert "the lion optimizer is not known to step stacked seeds as alone; its 2 seeds run one after another" \
        in result.output
    config = json.loads(next(tmp_path.glob("*/seed0/config.json")).read_text())
    assert config["optim"]["name"] == "lion" and config["optim"]["optimizer_args"] == "betas = [0.9, 0.9]"
    assert json.loads(next(tmp_path.glob("*/seed1/summary.json")).read_text())["status"] == "completed"


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "lino"], "unknown optimizer 'lino'; choose one of: adam, adamw, sgd, muon, or pytorch_optimizer's: "
                              "a2grad, "),
    (["--optimizer", "lion", "--optimizer-args", "beta = 0.9"],
     "--optimizer-args: lion takes no argument 'beta'; it takes: lr, betas, weight_decay, weight_decouple, "),
    (["--optimizer", "lion", "--optimizer-args", "betas = ["], "--optimizer-args must be TOML assignments "),
    (["--optimizer", "lion", "--optimizer-args", "betas = [2, 3]"], "--optimizer lion --optimizer-args 'betas = [2, 3]': "),
    (["--optimizer", "adamw", "--optimizer-args", "amsgrad = true"],
     "--optimizer-args is for pytorch_optimizer's optimizers; adamw's settings have flags of their own"),
])
def test_bad_names_and_arguments_are_one_line(cli, tmp_path, args, message):
    result = cli(["train", *TINY, *args, "--out", tmp_path / "runs"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + message), lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))


def test_without_the_library_the_line_names_the_extra(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(optimizer_library, "_library", lambda: None)
    result = cli(["train", *TINY, "--optimizer", "lion", "--out", tmp_path])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: unknown optimizer 'lion'; grokrun's are adam, adamw, sgd, muon, and the optimizers of "
        "pytorch_optimizer (lion, grokfastadamw, adopt, ...) need it: pip install 'grokrun[optimizers]'")

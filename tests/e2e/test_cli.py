"""Bad input through the CLI: exit status 2, one line naming the fix, no traceback, no run directory."""

import pytest

from grokrun.filters import FILTERS
from grokrun.optim import OPTIMIZERS
from grokrun.tasks import TASKS


BAD = [
    (["--task", "chess"], "unknown task 'chess'; choose one of: modular"),
    (["--filter", "kalman"], "unknown filter 'kalman'; choose one of: none, ema, ma, orthograd, or several in order, comma-separated (orthograd,ema; in a sweep's list, orthograd+ema)"),
    (["--op", "pow"], "unknown op 'pow'; choose one of: add, sub, mul, div"),
    (["--optimizer", "lino"], "unknown optimizer 'lino'; choose one of: adam, adamw, sgd, muon, or pytorch_optimizer's: a2grad"),
    (["--filter", "ema", "--alpha", "1.0"], "--alpha must be in [0, 1), got 1.0"),
    (["--filter", "ema", "--alpha", "-0.5"], "--alpha must be in [0, 1), got -0.5"),
    (["--filter", "ema", "--lamb", "-1"], "--lamb must be >= 0, got -1.0"),
    (["--filter", "ma", "--window-size", "0"], "--window-size must be in [1, 1,000], got 0"),
    (["--filter-type", "median"], "unknown filter type 'median'; choose one of: mean, sum"),
    (["--p", "1"], "--p must be >= 2, got 1"),
    (["--op", "div", "--p", "91"], "--op div needs a prime --p"),
    (["--train-frac", "0"], "--train-frac must be in (0, 1), got 0.0"),
    (["--train-frac", "1.5"], "--train-frac must be in (0, 1), got 1.5"),
    (["--batch-size", "0"], "--batch-size must be in [1, 1,000,000,000], got 0"),
    (["--max-steps", "0"], "--max-steps must be in [1, 1,000,000,000], got 0"),
    (["--stop-at-acc", "1.5"], "--stop-at-acc must be in (0, 1], got 1.5"),
    (["--device", "tpu"], "unknown device 'tpu'; choose one of: auto, cpu, cuda, mps"),
    (["--dtype", "float16"], "unknown dtype 'float16'; choose one of: float32, float64, bfloat16"),
    (["--config", "missing.toml"], "config file not found: missing.toml"),
]


def check_one_line_error(result, message, out_dir):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output + result.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input(cli, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    result = cli(["train", "--out", str(out), "--quiet", *args])
    check_one_line_error(result, message, out)


def test_malformed_config(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text("task = modular\n")  # unquoted string
    result = cli(["train", "--config", "bad.toml", "--out", "results"])
    check_one_line_error(result, "cannot parse bad.toml", tmp_path / "results")


def test_config_with_unknown_setting(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.toml").write_text("[filter]\nlamda = 2.0\n")
    result = cli(["train", "--config", "typo.toml", "--out", "results"])
    check_one_line_error(result, "unknown setting 'filter.lamda'; valid settings:", tmp_path / "results")


def test_config_with_wrong_type(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.toml").write_text("[train]\nmax_steps = \"many\"\n")
    result = cli(["train", "--config", "t.toml", "--out", "results"])
    check_one_line_error(result, "setting 'train.max_steps' must be int, got 'many'", tmp_path / "results")


def test_cuda_requested_without_cuda(cli, tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    result = cli(["train", "--device", "cuda", "--out", "results"])
    check_one_line_error(result, "--device cuda: no CUDA device is available here", tmp_path / "results")


@pytest.mark.parametrize("command", ["train", "compare"])
def test_help_lists_every_registry_key_on_its_option(cli, command):
    result = cli([command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    options = [line.strip("│ ") for line in result.output.splitlines() if line.startswith("│")]  # option rows
    for option, registry in {"--task": TASKS, "--filter": FILTERS, "--optimizer": OPTIMIZERS}.items():
        line = next(line for line in options if line.startswith(f"{option} "))
        assert f"One of: {', '.join(registry)}." in line, line

"""The MNIST task offline: small IDX files in torchvision's raw layout, written by the tests."""

import csv
import json

import pytest
import torch

from grokrun.config import resolve
from grokrun.engine import eval_steps
from grokrun.tasks.mnist import FILES, Options, build_model

from fakedata import synthetic_mnist


def train(cli, tmp_path, *args):
    result = cli(["train", "--task", "mnist", "--out", str(tmp_path / "runs"), "--quiet", *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_mnist_learns_from_idx_files_end_to_end(cli, tmp_path):
    data = synthetic_mnist(tmp_path / "data")
    # The published EMA settings (init x8, MSE, weight decay 2) reach 95% at about step 410 (seeds 0-2, CPU).
    result = train(cli, tmp_path, "--data-dir", str(data), "--no-download", "--train-points", "200", "--max-steps", "600",
                   "--filter", "ema")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "mnist-ema-seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best_val_acc"] >= 0.95  # chance is 0.1
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "weight_norm",
                             "softmax_collapse"]
    assert all(float(r["weight_norm"]) > 0 and r["train_acc"] for r in rows)  # log schedule: train scored at each
    assert all(r["softmax_collapse"] == "" for r in rows)  # MSE: no softmax to collapse
    # dense early, log-spaced later: every step to 29, every 10th to 140, then log-spaced from 150 to 600
    steps = [int(r["step"]) for r in rows]
    assert steps[:31] == list(range(31)) and steps[31:42] == list(range(40, 150, 10)) and steps[-1] == 600
    config = json.loads((run / "config.json").read_text())
    assert config["mnist"]["train_points"] == 200 and config["optim"]["name"] == "adamw"
    assert (config["filter"]["alpha"], config["filter"]["lamb"], config["optim"]["weight_decay"]) == (0.8, 0.1, 2.0)
    assert "modular" not in config


def test_missing_data_names_the_folder_and_the_files(cli, tmp_path):
    result = train(cli, tmp_path, "--data-dir", str(tmp_path / "nowhere"), "--no-download")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line == (f"error: MNIST is not in {tmp_path / 'nowhere' / 'MNIST' / 'raw'} (--no-download): place "
                    f"{', '.join(FILES)} there (gzipped or not, from https://ossci-datasets.s3.amazonaws.com/mnist/)")
    assert not (tmp_path / "runs").exists()


def test_a_corrupt_file_is_one_clear_line(cli, tmp_path):
    data = synthetic_mnist(tmp_path / "data", n_train=20, n_test=20)
    (data / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    result = train(cli, tmp_path, "--data-dir", str(data), "--no-download")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: cannot read the MNIST files in {data / 'MNIST' / 'raw'}")


def test_model_is_the_published_mlp_with_scaled_initialization():
    torch.manual_seed(0)
    model = build_model(Options())  # the published settings: 3 layers of 200, ReLU, init x8
    assert [tuple(p.shape) for p in model.parameters()] == [(200, 784), (200,), (200, 200), (200,), (10, 200), (10,)]
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    torch.manual_seed(0)
    plain = build_model(Options(init_scale=1.0))  # the same draws, unscaled
    for scaled, p in zip(model.parameters(), plain.parameters()):  # every parameter, biases included, x8 exactly
        assert torch.equal(scaled, 8 * p)
    # and unscaled is torch's default init: weights within +-1/sqrt(fan_in), so x8 puts them far outside it
    first = next(plain.parameters())
    assert first.abs().max() <= 784 ** -0.5 and next(model.parameters()).abs().max() > 784 ** -0.5


def test_published_defaults_and_presets():
    base = resolve(None, {"task": "mnist"})
    assert (base.optim.name, base.optim.lr, base.optim.beta2, base.optim.weight_decay, base.optim.warmup_steps) == (
        "adamw", 1e-3, 0.999, 0.01, 0)
    assert (base.train.batch_size, base.train.max_steps, base.train.eval_schedule) == (200, 100_000, "log")
    m = base.mnist
    assert (m.train_points, m.depth, m.width, m.activation, m.init_scale, m.loss) == (1000, 3, 200, "relu", 8.0, "mse")
    ema = resolve(None, {"task": "mnist", "filter.name": "ema"})
    assert (ema.filter.alpha, ema.filter.lamb, ema.optim.weight_decay) == (0.8, 0.1, 2.0)


def test_log_schedule_by_hand():
    cfg = resolve(None, {"task": "mnist", "train.max_steps": 100_000}).train
    steps = sorted(eval_steps(cfg, steps_per_epoch=5))
    assert steps[:29] == list(range(1, 30)) and steps[29:41] == list(range(30, 150, 10))
    log_part = steps[41:]
    assert log_part[0] == 150 and log_part[-1] == 100_000 and len(log_part) == 150
    ratios = [b / a for a, b in zip(log_part, log_part[1:])]
    assert max(ratios) / min(ratios) < 1.02  # evenly spaced in log(step), up to rounding
    cfg.eval_schedule, cfg.eval_every = "linear", 0
    assert sorted(eval_steps(cfg, steps_per_epoch=5))[:3] == [5, 10, 15]


@pytest.mark.parametrize("args,message", [
    (["--activation", "swish"], "unknown activation 'swish'; choose one of: relu, tanh, gelu, sigmoid"),
    (["--loss", "l1"], "unknown loss 'l1' for task mnist; choose one of: mse, ce, stablemax"),
    (["--init-scale", "0"], "--init-scale must be > 0, got 0.0"),
    (["--train-points", "0"], "--train-points must be >= 1, got 0"),
    (["--filter", "kalman"], "unknown filter 'kalman'; choose one of: none, ema, ma, orthograd, or several in order, comma-separated (orthograd,ema; in a sweep's list, orthograd+ema)"),
    (["--op", "add"], "--op does not apply to task mnist"),
    (["--eval-schedule", "cosine"], "unknown eval schedule 'cosine'; choose one of: linear, log"),
])
def test_bad_input(cli, args, message, tmp_path):
    result = train(cli, tmp_path, "--no-download", *args)
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {message}", result.output


def test_failed_download_is_one_clear_line(cli, tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once, like a machine offline
    result = train(cli, tmp_path, "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: MNIST is not in {tmp_path / 'data' / 'MNIST' / 'raw'} and could not be downloaded: place "
        "train-images-idx3-ubyte, ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_compare_and_plot_work_for_mnist(cli, tmp_path):
    data = synthetic_mnist(tmp_path / "data")
    out = tmp_path / "cmp"
    result = cli(["compare", "--task", "mnist", "--filter", "ema", "--data-dir", str(data),
                  "--no-download", "--train-points", "200", "--max-steps", "600", "--seeds", "0",
                  "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    with open(out / "comparison.csv", newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["baseline", "ema"]
    assert rows["ema"]["reached"] == "1" and rows["baseline"]["reached"] == "0"  # the filter groks, in time
    assert float(rows["ema"]["speedup_steps_lo"]) > 1
    plotted = cli(["plot", str(out)])
    assert plotted.exit_code == 0 and (out / "ema-seed0" / "weight_norm.png").is_file()


def test_gzipped_and_plain_idx_files_read_the_same(cli, tmp_path):
    """As distributed (and as ../shared/data/mnist holds them, read-only), the files are gzipped: read in place."""
    import gzip

    from grokrun.tasks.mnist import load

    data = synthetic_mnist(tmp_path / "data")
    plain = load(str(data), download=False)
    raw = data / "MNIST" / "raw"
    for name in FILES:
        (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
        (raw / name).unlink()
    zipped = load(str(data), download=False)
    assert all(torch.equal(a, b) for a, b in zip(plain, zipped))
    assert [t.dtype for t in zipped] == [torch.uint8, torch.long, torch.uint8, torch.long]
    (raw / f"{FILES[0]}.gz").write_bytes(gzip.compress((b"\x00\x00\x08\x03" + bytes(20)))[:-8])  # truncated
    result = train(cli, tmp_path, "--data-dir", str(data), "--no-download")
    assert result.exit_code == 2 and f"cannot read the MNIST files in {raw}" in result.stderr


def test_more_training_points_than_the_data_holds_is_one_line(cli, tmp_path):
    data = synthetic_mnist(tmp_path / "data", n_train=100, n_test=50)
    result = train(cli, tmp_path, "--data-dir", data, "--no-download", "--train-points", "1000", "--max-steps", "2")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --train-points 1,000: the training images in {data} are 100; ask for "
                                     "at most that many")
    assert not (tmp_path / "runs").exists()

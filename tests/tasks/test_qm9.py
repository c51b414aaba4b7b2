"""The QM9 task offline: a tiny qm9_v3.pt in torch-geometric's pre-processed format, written by the tests."""

import csv
import json

import pytest
import torch

from grokrun.config import resolve
from grokrun.tasks.qm9 import PROCESSED_URL, GraphStore

from fakedata import molecules, needs_preprocessed, write_qm9

# 40 molecules to train, 40 to validate. Seeds 0-2 reach a validation MSE of 2-10% of the targets' variance
# within 400 steps (baseline and EMA); a model predicting the mean would score 100%.
SMALL = ["--size", "80", "--max-steps", "400", "--init-scale", "1.0", "--lr", "3e-3", "--batch-size", "10",
         "--quiet"]


def train(cli, tmp_path, *args):
    result = cli(["train", "--task", "qm9", "--out", str(tmp_path / "runs"), *args])
    assert "Traceback" not in result.output, result.output
    return result


@needs_preprocessed
def test_regression_end_to_end(cli, tmp_path):
    data = write_qm9(tmp_path / "data")
    result = train(cli, tmp_path, "--data-dir", str(data), "--no-download", "--filter", "ema", *SMALL)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "qm9-ema-seed0"
    s = json.loads((run / "summary.json").read_text())
    variance = float(torch.stack([m["y"][0, 1] for m in molecules(80)]).var())
    assert s["best_val_acc"] is None and s["steps_to_val_acc"]["0.95"] is None
    assert s["min_val_loss"] < 0.2 * variance, (s["min_val_loss"], variance)  # far below predicting the mean
    assert 0 < s["min_val_loss_step"] <= 400
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["train_acc"] == "" and r["val_acc"] == "" for r in rows)  # no accuracy, cells left empty
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert result.stdout.strip().splitlines()[-1].startswith(f"min val loss {s['min_val_loss']:.4g} at step ")


@needs_preprocessed
def test_batches_gather_whole_molecules(tmp_path):
    import torch_geometric  # noqa: F401 (Data objects as the task receives them)
    from torch_geometric.data import Data

    graphs = [Data(**m) for m in molecules(5)]
    store = GraphStore(graphs, 1, torch.device("cpu"), torch.float32)
    x, edge_index, edge_attr, owner, y, n = store.batch(torch.tensor([3, 0]))
    g3, g0 = graphs[3], graphs[0]
    assert n == 2 and torch.equal(x, torch.cat([g3.x, g0.x]))
    assert torch.equal(edge_index, torch.cat([g3.edge_index, g0.edge_index + g3.num_nodes], 1))
    assert torch.equal(edge_attr, torch.cat([g3.edge_attr, g0.edge_attr]))
    assert owner.tolist() == [0] * g3.num_nodes + [1] * g0.num_nodes
    assert y.tolist() == [g3.y[0, 1].item(), g0.y[0, 1].item()]


def test_published_defaults_and_presets():
    base = resolve(None, {"task": "qm9"})
    q = base.qm9
    assert (q.size, q.train_frac, q.target, q.init_scale) == (100, 0.5, 1, 3.0)
    assert (base.optim.name, base.optim.lr, base.optim.weight_decay) == ("adamw", 1e-3, 0.0)
    assert (base.train.batch_size, base.train.max_steps) == (32, 100_000)
    ema = resolve(None, {"task": "qm9", "filter.name": "ema"})
    assert (ema.filter.alpha, ema.filter.lamb, ema.optim.weight_decay) == (0.9, 1.0, 0.01)


def test_missing_data_says_what_to_place_where(cli, tmp_path):
    result = train(cli, tmp_path, "--data-dir", str(tmp_path / "none"), "--no-download")
    assert result.exit_code == 2
    root = tmp_path / "none" / "QM9"
    assert result.stderr.strip() == (f"error: QM9 is not in {root} (--no-download): place qm9_v3.pt (from "
                                     f"{PROCESSED_URL}, unzipped) in {root / 'raw'}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,message", [
    (["--target", "19"], "--target must be in 0..18, got 19"),
    (["--size", "1"], "--size must be >= 2, got 1"),
    (["--init-scale", "-1"], "--init-scale must be > 0, got -1.0"),
])
def test_bad_input(cli, args, message, tmp_path):
    result = train(cli, tmp_path, "--no-download", *args)
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {message}"


@pytest.mark.slow
@needs_preprocessed
def test_compare_and_plot_on_qm9_runs(cli, tmp_path):
    data = write_qm9(tmp_path / "data")
    out = tmp_path / "cmp"
    result = cli(["compare", "--task", "qm9", "--filter", "ema", "--data-dir", str(data),
                  "--no-download", "--seeds", "0,1", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    assert "min val loss" in result.stdout and "speedup" not in result.stdout  # the regression headline
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["baseline", "ema"]
    assert all(r["reached"] == "" and float(r["min_val_loss_median"]) > 0 for r in rows)
    plotted = cli(["plot", str(out)])
    assert plotted.exit_code == 0, plotted.output
    run = out / "ema-seed1"
    assert (run / "loss.png").stat().st_size > 2000 and not (run / "accuracy.png").exists()
    assert (out / "comparison.png").stat().st_size > 2000


@needs_preprocessed
def test_failed_download_is_one_clear_line(cli, tmp_path, monkeypatch):
    from torch_geometric.datasets import QM9

    monkeypatch.setattr(QM9, "processed_url", "http://127.0.0.1:9/qm9_v3.zip")  # refused at once, as offline
    result = train(cli, tmp_path, "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: QM9 is not in {tmp_path / 'data' / 'QM9'} and could "
                                                   "not be downloaded"), lines

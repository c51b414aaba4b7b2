"""High-dimensional XOR (GrokAlign's): the data, learning at a small size, the perturbed-accuracy column, stacking."""

import pytest
import torch

from conftest import metric_rows
from grokrun.config import resolve
from grokrun.tasks.xor import XorTask, examples

SMALL = ["--task", "xor", "--features", "400", "--samples", "100", "--width", "128", "--quiet"]


def test_two_signs_among_small_noise_and_the_label_is_their_product():
    cfg = resolve(None, {"task": "xor", "xor.features": 50, "xor.samples": 64, "xor.epsilon": 0.1}).xor
    torch.manual_seed(0)
    x, y = examples(cfg)
    assert x.shape == (64, 50) and set(x[:, :2].unique().tolist()) == {-1.0, 1.0}
    assert set(x[:, 2:].unique().tolist()) == {-0.1, 0.1}
    assert torch.equal(y, x[:, 0] * x[:, 1])
    task = XorTask(cfg, 0, 64, torch.device("cpu"), torch.float64)
    (val, labels), (perturbed, same) = task.data["val"], task.data["perturbed"]
    assert torch.equal(perturbed[:, :2], val[:, :2]) and torch.equal(labels, same)  # only the noise features move
    assert (perturbed[:, 2:] - val[:, 2:]).std().item() == pytest.approx(0.2, rel=0.05)


def test_a_small_xor_is_learned_and_its_perturbed_accuracy_is_a_column(cli, tmp_path):
    result = cli(["train", *SMALL, "--max-steps", "200", "--out", tmp_path, "--name", "x"])
    assert result.exit_code == 0, result.output
    rows = metric_rows(tmp_path / "x")
    assert float(rows[0]["val_acc"]) < 0.7 and float(rows[-1]["train_acc"]) == 1.0
    assert float(rows[-1]["val_acc"]) >= 0.95
    assert all(r["val_acc_perturbed"] for r in rows)
    loud = cli(["train", *SMALL, "--perturb", "30", "--max-steps", "200", "--out", tmp_path, "--name", "loud"])
    assert loud.exit_code == 0
    assert float(metric_rows(tmp_path / "loud")[-1]["val_acc_perturbed"]) < float(rows[-1]["val_acc_perturbed"])


def test_xor_seeds_stack_as_alone(cli, tmp_path):
    args = [*SMALL, "--max-steps", "30"]
    assert cli(["train", *args, "--seeds", "0,1", "--out", tmp_path, "--name", "s"]).exit_code == 0
    assert cli(["train", *args, "--seed", "1", "--out", tmp_path, "--name", "a"]).exit_code == 0
    stacked, alone = metric_rows(tmp_path / "s" / "seed1"), metric_rows(tmp_path / "a")
    assert [r.keys() for r in stacked] == [r.keys() for r in alone]
    for x, y in zip(stacked, alone):
        assert all(x[k] == y[k] if not x[k] else float(x[k]) == pytest.approx(float(y[k]), rel=1e-9) for k in x)


@pytest.mark.parametrize("args, message", [
    (["--features", "1"], "--features must be >= 2"),
    (["--epsilon", "2"], "--epsilon must be in [0, 1], got 2.0"),
    (["--features", "1000000", "--samples", "100000"], "--features × --samples must be <= 1e9"),
])
def test_bad_input(cli, tmp_path, args, message):
    result = cli(["train", *SMALL, *args, "--out", tmp_path])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr

"""Sparse parity: the label is the parity of the first k of n random bits."""

import json

import pytest
import torch

from grokrun.config import resolve
from grokrun.tasks.parity import examples

SMALL = ["--task", "parity", "--n-bits", "8", "--k", "2", "--samples", "256", "--width", "64", "--quiet"]


def test_labels_are_the_parity_of_the_first_k_bits():
    torch.manual_seed(0)
    bits, labels = examples(resolve(None, {"task": "parity", "parity.n_bits": 5, "parity.k": 3,
                                           "parity.samples": 64}).parity)
    assert bits.shape == (64, 5) and set(bits.unique().tolist()) <= {0, 1}
    assert labels.tolist() == [(int(b[0]) + int(b[1]) + int(b[2])) % 2 for b in bits]


def test_a_small_parity_is_learned(cli, tmp_path):
    result = cli(["train", *SMALL, "--max-steps", "600", "--out", tmp_path, "--name", "p"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["best_val_acc"] >= 0.95  # (chance is 0.5; seed 0 reaches 95% at step 254)
    assert summary["title"]["task"] == "parity: 2 of 8 bits, 256 samples, 50% train, MLP 2×64"


def test_parity_seeds_stack(cli, tmp_path):
    args = [*SMALL, "--max-steps", "40", "--dtype", "float64", "--loss", "stablemax"]
    assert cli(["train", *args, "--seeds", "0,1", "--out", tmp_path, "--name", "s"]).exit_code == 0
    assert cli(["train", *args, "--seed", "1", "--out", tmp_path, "--name", "a"]).exit_code == 0
    stacked = (tmp_path / "s" / "seed1" / "metrics.csv").read_text().splitlines()
    alone = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    for x, y in zip(stacked[1:], alone[1:]):
        xs, ys = x.split(","), y.split(",")
        assert all(a == b if not a or i == 1 else float(a) == pytest.approx(float(b), rel=1e-9)
                   for i, (a, b) in enumerate(zip(xs, ys)) if i != 1)


@pytest.mark.parametrize("args, message", [
    (["--k", "9"], "--k must be <= --n-bits (8), got 9"),
    (["--samples", "1"], "--samples must be >= 2"),
    (["--train-frac", "1"], "--train-frac must be in (0, 1), got 1.0"),
])
def test_bad_input(cli, tmp_path, args, message):
    result = cli(["train", *SMALL, *args, "--out", tmp_path])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr

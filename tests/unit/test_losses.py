"""StableMax, the softmax's precision and softmax collapse."""

import csv
import math

import pytest
import torch

from grokrun.losses import classification_loss, collapsed, log_stablemax, stablemax_s


def test_stablemax_by_hand():
    """s(2) = 3, s(0) = 1, s(-1) = 1/2: probabilities 3/4.5, 1/4.5, 0.5/4.5."""
    x = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    assert stablemax_s(x).tolist() == [[3.0, 1.0, 0.5]]
    assert torch.allclose(log_stablemax(x).exp(), torch.tensor([[3 / 4.5, 1 / 4.5, 0.5 / 4.5]], dtype=torch.float64))
    loss = classification_loss(x, torch.tensor([0]), "stablemax")
    assert loss.item() == pytest.approx(math.log(1.5), rel=1e-15)


def test_stablemax_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(5, 7, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 7, (5,), generator=g)
    assert torch.autograd.gradcheck(lambda z: classification_loss(z, y, "stablemax"), (x,))
    big = torch.tensor([[1e6, -1e6, 0.0]], dtype=torch.float64, requires_grad=True)  # both branches far out
    classification_loss(big, torch.tensor([1]), "stablemax").backward()
    assert torch.isfinite(big.grad).all()


def test_the_loss_in_float64_whatever_the_logits():
    x = torch.tensor([[30.0, 0.0, -5.0]])  # float32 logits, a confident prediction
    y = torch.tensor([0])
    exact = classification_loss(x.double(), y)
    assert classification_loss(x, y).item() == 0.0  # float32: the right class's probability rounds to 1
    assert classification_loss(x, y, dtype=torch.float64).item() == exact.item() > 0


def test_collapse_counts_exactly_zero_float32_losses():
    logits = torch.tensor([[100.0, 0.0], [1.0, 0.0], [0.0, 100.0]])
    assert collapsed(logits, torch.tensor([0, 0, 1])).item() == 2
    assert collapsed(logits, torch.tensor([1, 0, 0])).item() == 0


TINY = ["--task", "modular", "--op", "add", "--p", "11", "--train-frac", "0.8", "--width", "32", "--layers", "1",
        "--heads", "2", "--batch-size", "32", "--eval-every", "4", "--train-eval-every", "1", "--quiet"]


def test_collapse_under_softmax_and_none_under_stablemax(cli, tmp_path):
    """The MNIST MLP at its x8 initialization has huge logits: with softmax cross-entropy, two thirds of its 200
    training images have a float32 loss of exactly 0 by step 30 (0.68 here); with StableMax, none do."""
    from fakedata import synthetic_mnist

    data = synthetic_mnist(tmp_path / "data")

    def collapse(loss):
        result = cli(["train", "--task", "mnist", "--data-dir", data, "--no-download", "--train-points", "200",
                      "--loss", loss, "--max-steps", "30", "--quiet", "--out", tmp_path, "--name", loss])
        assert result.exit_code == 0, result.output
        with open(tmp_path / loss / "metrics.csv", newline="") as f:
            return [float(r["softmax_collapse"]) for r in csv.DictReader(f)]

    softmax, stablemax = collapse("ce"), collapse("stablemax")
    assert softmax[-1] > 0.5 and all(0 <= s <= 1 for s in softmax)
    assert stablemax == [0.0] * len(stablemax)


def test_stablemax_in_float64_on_the_modular_task(cli, tmp_path):
    result = cli(["train", *TINY, "--max-steps", "40", "--loss", "stablemax", "--softmax-dtype", "float64",
                  "--out", tmp_path, "--name", "stablemax"])
    assert result.exit_code == 0, result.output
    title = __import__("json").loads((tmp_path / "stablemax" / "summary.json").read_text())["title"]["task"]
    assert title == "modular: x+y mod 11, 80% train, StableMax"


def test_bad_loss_and_dtype(cli, tmp_path):
    result = cli(["train", *TINY, "--loss", "hinge", "--out", tmp_path])
    assert result.exit_code == 2 and "unknown loss 'hinge' for task modular; choose one of: ce, stablemax" in result.stderr
    result = cli(["train", *TINY, "--softmax-dtype", "float16", "--out", tmp_path])
    assert result.exit_code == 2 and "unknown softmax dtype 'float16'; choose one of: auto, float32, float64" in result.stderr

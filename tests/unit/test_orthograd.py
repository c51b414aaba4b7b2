"""⊥Grad (--filter orthograd) and filters applied in order (--filter orthograd,ema)."""

import csv
import math

import pytest
import torch

from grokrun.filters import Chain, EMAFilter, OrthoGradFilter


def param(w, g):
    p = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
    p.grad = torch.tensor(g, dtype=torch.float64)
    return p


def test_by_hand():
    """w = (1, 0), g = (1, 1): the part along w is (1, 0); what is left, (0, 1), is rescaled to |g| = √2."""
    p = param([1.0, 0.0], [1.0, 1.0])
    OrthoGradFilter().apply([p])
    assert torch.allclose(p.grad, torch.tensor([0.0, math.sqrt(2)], dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 4)])
def test_orthogonal_to_the_weights_at_the_gradients_norm(shape):
    g = torch.Generator().manual_seed(1)
    w, grad = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
    p = torch.nn.Parameter(w.clone())
    p.grad = grad.clone()
    OrthoGradFilter().apply([p])
    assert abs((p.grad * w).sum().item()) < 1e-12 * grad.norm().item() * w.norm().item()
    assert p.grad.norm().item() == pytest.approx(grad.norm().item(), rel=1e-14)
    assert torch.equal(p.detach(), w)  # the weights are read, not changed


def test_stacked_seeds_are_projected_one_by_one():
    g = torch.Generator().manual_seed(2)
    w, grad = torch.randn(3, 4, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    stacked = torch.nn.Parameter(w.clone())
    stacked.grad = grad.clone()
    f = OrthoGradFilter()
    f.set_stacked_seeds(True)
    f.apply([stacked])
    for i in range(3):
        alone = torch.nn.Parameter(w[i].clone())
        alone.grad = grad[i].clone()
        OrthoGradFilter().apply([alone])
        assert torch.allclose(stacked.grad[i], alone.grad, rtol=1e-14, atol=0)


def test_no_amplification_leaves_the_gradient():
    p = param([1.0, 0.0], [1.0, 1.0])
    OrthoGradFilter().apply([p], amplify=False)
    assert p.grad.tolist() == [1.0, 1.0]


def test_a_chain_applies_its_filters_in_order():
    g = torch.Generator().manual_seed(3)
    steps = [torch.randn(6, generator=g, dtype=torch.float64) for _ in range(4)]
    w = torch.randn(6, generator=g, dtype=torch.float64)
    chained, by_hand = Chain([OrthoGradFilter(), EMAFilter(0.9, 2.0)]), (OrthoGradFilter(), EMAFilter(0.9, 2.0))
    for grad in steps:
        a, b = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
        a.grad, b.grad = grad.clone(), grad.clone()
        chained.apply([a])
        for f in by_hand:
            f.apply([b])
        assert torch.equal(a.grad, b.grad)
    state = chained.state_dict()
    assert torch.equal(state["1"]["mu"][0], by_hand[1].mu[0])


TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--max-steps", "40", "--dtype", "float64", "--quiet"]


def test_orthograd_then_ema_trains_seeds_together_as_alone(cli, tmp_path):
    """On the MNIST MLP (float64) the stack equals the seeds alone to 1e-9. (Not on the modular decoder: its key
    biases have a zero gradient, which Adam turns into rounding-noise steps of size lr, and ⊥Grad's projection
    mixes those weights into the other biases' updates, so rounding differences grow to ~1e-7 within 10 steps.)"""
    from fakedata import synthetic_mnist

    data = synthetic_mnist(tmp_path / "data")
    args = ["--task", "mnist", "--data-dir", data, "--no-download", "--train-points", "100", "--width", "32",
            "--max-steps", "40", "--dtype", "float64", "--quiet", "--filter", "orthograd,ema"]
    assert cli(["train", *args, "--seeds", "0,1", "--out", tmp_path, "--name", "stack"]).exit_code == 0
    assert cli(["train", *args, "--seed", "1", "--out", tmp_path, "--name", "alone"]).exit_code == 0

    def rows(path):
        with open(path / "metrics.csv", newline="") as f:
            return [{k: float(v) for k, v in r.items() if v and k != "wall_s"} for r in csv.DictReader(f)]

    stacked, alone = rows(tmp_path / "stack" / "seed1"), rows(tmp_path / "alone")
    assert len(stacked) == len(alone) > 10
    for a, b in zip(stacked, alone):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-9) for k in a)
    title = __import__("json").loads((tmp_path / "alone" / "summary.json").read_text())["title"]["variant"]
    assert title == "⊥Grad then EMA α=0.8 λ=0.1 · adamw wd 2"  # the chain takes EMA's published MNIST preset


@pytest.mark.parametrize("name, message", [
    ("orthgrad", "unknown filter 'orthgrad'"),
    ("ema,none", "the filters 'ema,none' cannot be combined"),
    ("ema,ema", "the filters 'ema,ema' cannot be combined"),
])
def test_bad_filter_names(cli, tmp_path, name, message):
    result = cli(["train", *TINY, "--filter", name, "--out", tmp_path])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}")

"""--reg grokalign / jacobian: the penalty against Jacobians computed exactly, its estimator's error, its gradient,
and the runs that cannot take it."""

import math

import pytest
import torch
from torch import nn

from grokrun.regularizers import GrokAlign, JacobianNorm


def small_net(bias: bool, act=nn.Tanh):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16, bias=bias), act(), nn.Linear(16, 16, bias=bias), act(),
                         nn.Linear(16, 4, bias=bias)).double()


def by_hand(net, x):
    """Per row: ‖J‖_F and ‖f(x) − J x‖², J from torch.autograd.functional.jacobian (an independent route)."""
    norms, offsets = [], []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).squeeze(0), xi)
        norms.append(jac.norm())
        offsets.append((net(xi.unsqueeze(0)).squeeze(0) - jac @ xi).pow(2).sum())
    return torch.stack(norms), torch.stack(offsets)


def test_the_exact_penalty_is_the_jacobians_frobenius_norm_plus_the_offsets_square():
    net, x = small_net(bias=True), torch.randn(7, 6, dtype=torch.float64)
    norms, offsets = by_hand(net, x)
    assert GrokAlign().exact(net, x).item() == pytest.approx((norms + offsets).sum().item(), rel=1e-12)
    assert JacobianNorm().exact(net, x).item() == pytest.approx(norms.sum().item(), rel=1e-12)


def test_the_offset_is_exact_and_zero_for_a_relu_network_without_biases():
    x = torch.randn(5, 6, dtype=torch.float64)
    for bias in (False, True):
        net = small_net(bias, nn.ReLU)
        torch.manual_seed(3)
        with_offset = GrokAlign()(net, x)
        torch.manual_seed(3)  # the same random directions: the difference is the offset term alone
        without = JacobianNorm()(net, x)
        offset = (with_offset - without).item()
        expected = by_hand(net, x)[1].mean().item()
        if bias:
            assert expected > 1e-3 and offset == pytest.approx(expected, rel=1e-10)
        else:
            assert abs(offset) < 1e-12 and expected < 1e-24  # piecewise linear through 0: f(x) = J_x x


def test_hutchinsons_estimate_is_the_frobenius_norm_within_its_error_over_many_draws():
    """One random unit direction v per row: C ‖vᵀJ‖² has mean ‖J‖_F² exactly (their estimator, squared); over
    4,000 draws the mean lies within 4 standard errors of it, and the estimate itself (a square root) below it."""
    net, x = small_net(bias=True), torch.randn(1, 6, dtype=torch.float64)
    exact = by_hand(net, x)[0].item()
    torch.manual_seed(1)
    draws = torch.tensor([JacobianNorm()(net, x).item() for _ in range(4000)], dtype=torch.float64)
    squares = draws ** 2
    error = squares.std().item() / math.sqrt(len(draws))
    assert abs(squares.mean().item() - exact ** 2) < 4 * error, (squares.mean().item(), exact ** 2, error)
    assert draws.mean().item() < exact and draws.std().item() > 0  # Jensen, and it is random


def test_the_training_estimate_is_differentiable_in_the_weights():
    """The weight gradient of the estimate (random directions fixed by the seed) equals the gradient of the same
    formula written with torch.autograd.functional.jacobian(create_graph=True)."""
    net, x = small_net(bias=True), torch.randn(3, 6, dtype=torch.float64)
    torch.manual_seed(5)
    net.zero_grad()
    GrokAlign()(net, x).backward()
    ours = [p.grad.clone() for p in net.parameters()]
    torch.manual_seed(5)
    v = torch.randn(3, 4, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    net.zero_grad()
    total = 0
    for xi, vi in zip(x, v):
        jac = torch.autograd.functional.jacobian(lambda t: net(t.unsqueeze(0)).squeeze(0), xi, create_graph=True)
        offset = net(xi.unsqueeze(0)).squeeze(0) - jac @ xi
        total = total + torch.sqrt(4 * (vi @ jac).pow(2).sum()) + offset.pow(2).sum()
    (total / 3).backward()
    for a, b in zip(ours, (p.grad for p in net.parameters())):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


SMALL = ["--task", "modular", "--op", "add", "--p", "23", "--train-frac", "0.8", "--width", "64", "--layers", "1",
         "--batch-size", "128", "--quiet", "--max-steps", "20", "--eval-every", "10"]


def test_a_run_writes_the_exact_penalty_at_each_evaluation(cli, tmp_path):
    from conftest import metric_rows
    from grokrun.tasks.modular import ModularTask

    result = cli(["train", *SMALL, "--arch", "mlp", "--reg", "grokalign", "--reg-weight", "0.1", "--out", tmp_path,
                  "--name", "r"])
    assert result.exit_code == 0, result.output
    rows = metric_rows(tmp_path / "r")
    assert [r["step"] for r in rows] == ["0", "10", "20"] and all(float(r["penalty"]) > 0 for r in rows)
    from grokrun.config import resolve

    cfg = resolve(None, {"task": "modular", "modular.op": "add", "modular.p": 23, "modular.train_frac": 0.8,
                         "modular.width": 64, "modular.layers": 1, "modular.arch": "mlp"})
    torch.manual_seed(0)
    task = ModularTask(cfg.modular, 0, 128, torch.device("cpu"), torch.float32)
    f, x = task.vector_input(task.model, task.data["train"][0])
    expected = GrokAlign().exact(f, x).item() / len(x)
    assert float(rows[0]["penalty"]) == pytest.approx(expected, rel=1e-6)  # at step 0: the initial weights'


@pytest.mark.parametrize("args, message", [
    (["--reg", "grokalign", "--reg-weight", "0.1"],
     "--reg grokalign differentiates the model with respect to its input vector; the decoder looks its tokens up"),
    (["--arch", "mlp", "--reg", "grokalign"], "--reg grokalign needs its weight: add --reg-weight"),
    (["--arch", "mlp", "--reg-weight", "0.1"], "--reg-weight weighs a regularizer"),
    (["--arch", "mlp", "--reg", "l7", "--reg-weight", "0.1"],
     "unknown regularizer 'l7'; choose one of: none, grokalign"),
])
def test_runs_that_cannot_take_it_are_one_line(cli, tmp_path, args, message):
    result = cli(["train", *SMALL, *args, "--out", tmp_path])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert not any(tmp_path.rglob("config.json"))

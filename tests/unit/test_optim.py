"""The built-in optimizers: their multi-tensor step against torch's per-tensor loop, and --decay-to init (weight decay
toward the initial weights, for any optimizer that decays)."""

import os
import signal

import pytest
import torch

from conftest import metric_rows as rows
from grokrun.config import resolve
from grokrun.optim import make_optimizer


def optimizer_for(params, name, decay_to, wd=0.5, lr=0.1):
    o = resolve(None, {"optim.name": name, "optim.weight_decay": wd, "optim.lr": lr, "optim.decay_to": decay_to}).optim
    return make_optimizer(o, params)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_a_zero_gradient_leaves_the_weights_at_their_start(name):
    g = torch.Generator().manual_seed(0)
    start = torch.randn(4, 3, generator=g)
    to_init, to_zero = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt_init, opt_zero = optimizer_for([to_init], name, "init"), optimizer_for([to_zero], name, "zero")
    for _ in range(20):
        for p, opt in ((to_init, opt_init), (to_zero, opt_zero)):
            p.grad = torch.zeros_like(p)
            opt.step()
    assert torch.equal(to_init.detach(), start)
    assert to_zero.detach().norm() < 0.9 * start.norm()  # the usual decay shrinks them


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_from_a_zero_start_it_is_the_usual_decay(name):
    """Decaying toward w0 = 0 is the usual decay; the same numbers up to the order of one multiplication."""
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, generator=g, dtype=torch.float64) for _ in range(15)]
    a = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt_a, opt_b = optimizer_for([a], name, "init"), optimizer_for([b], name, "zero")
    for grad in grads:
        for p, opt in ((a, opt_a), (b, opt_b)):
            p.grad = grad.clone()
            opt.step()
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    assert a.detach().abs().sum() > 0


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_multi_tensor_step_gives_the_weights_of_torchs_per_tensor_loop_bitwise(name, cls, dtype):
    """grokrun builds these with foreach=True (the CPU's C++ loop over tensors): the weights after 30 steps of
    random gradients, with weight decay and a learning rate that changes, are those of torch's default on the CPU
    (the Python loop, foreach=False), bit for bit."""
    g = torch.Generator().manual_seed(2)
    start = [torch.randn(shape, generator=g, dtype=dtype) for shape in ((13, 16), (16,), (4, 16, 16), (1,))]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    o = resolve(None, {"optim.name": name, "optim.weight_decay": 0.3, "optim.lr": 0.01}).optim
    built = make_optimizer(o, ours)
    assert type(built) is cls and built.param_groups[0]["foreach"] is True
    loop = make_optimizer(o, theirs)
    for group in loop.param_groups:
        group["foreach"] = False  # (read at each step: torch's per-tensor loop, its default on the CPU)
    for step in range(30):
        grads = [torch.randn(t.shape, generator=g, dtype=dtype) for t in start]
        for opt, params in ((built, ours), (loop, theirs)):
            for group in opt.param_groups:
                group["lr"] = 0.01 * (step + 1) / 30  # (as the warmup's LambdaLR sets it)
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert not torch.equal(ours[0], start[0])


TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--max-steps", "40", "--checkpoint-every", "10",
        "--optimizer", "adamw", "--weight-decay", "1.0", "--decay-to", "init", "--dtype", "float64", "--quiet"]



def test_the_initial_weights_survive_a_resume_and_a_stack(cli, tmp_path, monkeypatch):
    assert cli(["train", *TINY, "--out", tmp_path, "--name", "whole"]).exit_code == 0
    from grokrun.filters import GradFilter

    calls, original = {"n": 0}, GradFilter.apply

    def apply(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 23:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(GradFilter, "apply", apply)
    assert cli(["train", *TINY, "--out", tmp_path, "--name", "cut"]).exit_code == 130
    monkeypatch.setattr(GradFilter, "apply", original)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["optimizer"]
    assert len(saved["decay_init"]) == len(saved["param_groups"][0]["params"])
    assert cli(["train", "--resume", tmp_path / "cut", "--quiet"]).exit_code == 0
    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")
    # and seeds stacked: the stack's decay_init is cut per seed into the checkpoints and stacked back on resume
    assert cli(["train", *TINY, "--seeds", "0,1", "--out", tmp_path, "--name", "stack"]).exit_code == 0
    stacked, alone = rows(tmp_path / "stack" / "seed0"), rows(tmp_path / "whole")
    for a, b in zip(stacked, alone):
        assert all((a[k] == b[k]) if not a[k] else float(a[k]) == pytest.approx(float(b[k]), rel=1e-9) for k in a)
    calls["n"] = 0
    monkeypatch.setattr(GradFilter, "apply", apply)
    assert cli(["train", *TINY, "--seeds", "0,1", "--out", tmp_path, "--name", "stack-cut"]).exit_code == 130
    monkeypatch.setattr(GradFilter, "apply", original)
    assert cli(["train", "--resume", tmp_path / "stack-cut", "--quiet"]).exit_code == 0
    for s in (0, 1):
        assert rows(tmp_path / "stack-cut" / f"seed{s}") == rows(tmp_path / "stack" / f"seed{s}")


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_normalize_lr_divides_the_rate_by_one_plus_lamb_from_the_first_amplified_step():
    """--normalize-lr with --filter-start 20 and a warmup of 10: updates 1-10 warm up, 11-20 run at lr, and from
    update 21 (the first the filter amplifies) at lr / (1 + lamb); a filter that does not amplify keeps lr."""
    from grokrun.engine.run import Run

    def rates(filter_name, **more):
        cfg = resolve(None, {"task": "modular", "modular.p": 11, "filter.name": filter_name, "filter.normalize_lr": True,
                             "filter.start": 20, "filter.lamb": 3.0, "optim.lr": 0.004, **more})
        run = Run([cfg])
        seen = []
        for _ in range(30):
            seen.append(run.optimizer.param_groups[0]["lr"])
            run.scheduler.step()
        return seen

    ema = rates("ema")
    assert ema[:11] == pytest.approx([0.004 * k / 10 for k in range(11)])
    assert ema[11:20] == pytest.approx([0.004] * 9) and ema[20:] == pytest.approx([0.001] * 10)
    assert rates("orthograd,ma", **{"filter.window_size": 5})[20:] == pytest.approx([0.001] * 10)  # a chain: its MA
    assert rates("orthograd")[20:] == pytest.approx([0.004] * 10) and rates("none")[20:] == pytest.approx([0.004] * 10)
    off = resolve(None, {"task": "modular", "modular.p": 11, "filter.name": "ema", "filter.start": 20})
    assert Run([off]).normalized == 1.0


def test_anneal_steps_is_openai_grok_s_cosine_to_a_tenth_after_the_warmup():
    """openai/grok's _scheduler_lr with anneal_lr: step / warmup * max_lr up to the warmup, then
    min_lr + (max_lr - min_lr) (1 + cos(pi t)) / 2 with t = (step - warmup) / anneal_lr_steps and min_lr = max_lr / 10,
    then min_lr; the same numbers written out by hand."""
    import math

    from grokrun.optim import lr_factor

    f = lr_factor(10, anneal_steps=100)
    assert [f(i) for i in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert f(60) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.5)) / 2) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(5000) == pytest.approx(0.1)
    assert all(f(i) >= f(i + 1) for i in range(10, 200))
    both = lr_factor(10, normalized=1 / 3, start=50, anneal_steps=100)  # with --normalize-lr from update 51 on
    assert both(49) == pytest.approx(f(49)) and both(50) == pytest.approx(f(50) / 3)


def test_titles_name_the_normalized_rate_the_annealing_and_library_arguments():
    from grokrun.config import to_dict
    from grokrun.filters import describe_variant

    plain = resolve(None, {"filter.name": "ema"})
    assert describe_variant(to_dict(plain)) == "EMA α=0.98 λ=2 · adam wd 0.005"
    both = resolve(None, {"filter.name": "ema", "filter.normalize_lr": True, "optim.anneal_steps": 500})
    assert describe_variant(to_dict(both)) == "EMA α=0.98 λ=2 · lr / (1 + λ) · adam wd 0.005 · cosine over 500"
    lion = resolve(None, {"optim.name": "lion", "optim.optimizer_args": "betas = [0.9, 0.9]"})
    assert describe_variant(to_dict(lion)) == "no filter · lion (betas = [0.9, 0.9]) wd 0"

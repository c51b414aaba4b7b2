"""Filter math against sequences computed by hand, and the drop-in functions against the published rules."""

from collections import deque

import pytest
import torch
from torch import nn

from grokrun.filters import FILTERS, EMAFilter, GradFilter, MAFilter, gradfilter_ema, gradfilter_ma


def scalar_param() -> nn.Parameter:
    return nn.Parameter(torch.zeros(()))


def run(filt, grads, **apply_kw):
    """Feed a scalar parameter the gradient sequence; return the gradients after filtering."""
    p = scalar_param()
    out = []
    for i, g in enumerate(grads):
        p.grad = torch.tensor(float(g))
        kw = {k: v(i + 1) if callable(v) else v for k, v in apply_kw.items()}
        filt.apply([p], **kw)
        out.append(p.grad.item())
    return out


def test_ema_hand_computed():
    # mu1 = 1; mu2 = .5*1 + .5*2 = 1.5; mu3 = .5*1.5 + .5*3 = 2.25; g + 2*mu
    assert run(EMAFilter(alpha=0.5, lamb=2.0), [1, 2, 3]) == [3.0, 5.0, 7.5]


def test_ema_alpha_zero_is_lamb_plus_one_times_g():
    assert run(EMAFilter(alpha=0.0, lamb=3.0), [1, -2]) == [4.0, -8.0]


def test_ma_mean_with_warmup_waits_for_full_window():
    # window 2: nothing until full, then g + mean(last 2)
    assert run(MAFilter(window_size=2, lamb=1.0), [1, 2, 4, 8]) == [1.0, 3.5, 7.0, 14.0]


def test_ma_sum():
    assert run(MAFilter(window_size=2, lamb=1.0, filter_type="sum"), [1, 2, 4, 8]) == [1.0, 5.0, 10.0, 20.0]


def test_ma_without_warmup_averages_what_it_has():
    # step 1: mean of [1] -> 2; step 2: mean [1, 2] = 1.5 -> 3.5; then the full window
    assert run(MAFilter(window_size=2, lamb=1.0, warmup=False), [1, 2, 4]) == [2.0, 3.5, 7.0]


def test_ma_over_many_laps_of_the_ring():
    # g_k = k, window 3: from step 3 the mean of (k-2, k-1, k) is k-1, so g' = 2k - 1
    got = run(MAFilter(window_size=3, lamb=1.0), range(1, 12))
    assert got == [1.0, 2.0] + [2.0 * k - 1 for k in range(3, 12)]


def test_filter_start_withholds_amplification_but_updates_state():
    ema = run(EMAFilter(alpha=0.5, lamb=2.0), [1, 2, 3], amplify=lambda step: step > 1)
    assert ema == [1.0, 5.0, 7.5]  # step 1 unchanged; mu still became 1, so later steps match
    ma = run(MAFilter(window_size=2, lamb=1.0, warmup=False), [1, 2, 4], amplify=lambda step: step > 2)
    assert ma == [1.0, 2.0, 7.0]


def test_none_grad_is_skipped_and_keeps_its_state():
    a, b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
    f = EMAFilter(alpha=0.5, lamb=1.0)
    a.grad, b.grad = torch.tensor(1.0), torch.tensor(10.0)
    f.apply([a, b])                      # mu_a = 1, mu_b = 10
    a.grad, b.grad = torch.tensor(3.0), None
    f.apply([a, b])                      # mu_a = 2; b untouched
    assert a.grad.item() == 5.0 and b.grad is None
    a.grad, b.grad = torch.tensor(1.0), torch.tensor(20.0)
    f.apply([a, b])                      # mu_a = 1.5, mu_b = .5*10 + .5*20 = 15
    assert (a.grad.item(), b.grad.item()) == (2.5, 35.0)


def test_ma_none_grad_keeps_each_parameter_on_its_own_count():
    a, b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
    f = MAFilter(window_size=2, lamb=1.0)
    a.grad, b.grad = torch.tensor(1.0), torch.tensor(10.0)
    f.apply([a, b])
    a.grad, b.grad = torch.tensor(3.0), None
    f.apply([a, b])                      # a's window full: 3 + 2
    assert a.grad.item() == 5.0
    a.grad, b.grad = torch.tensor(5.0), torch.tensor(20.0)
    f.apply([a, b])                      # a: 5 + mean(3, 5); b: full now, 20 + mean(10, 20)
    assert (a.grad.item(), b.grad.item()) == (9.0, 35.0)


def test_frozen_parameter_is_ignored():
    p = nn.Parameter(torch.zeros(()), requires_grad=False)
    p.grad = torch.tensor(1.0)
    f = EMAFilter(alpha=0.5, lamb=2.0)
    f.apply([p])
    assert p.grad.item() == 1.0 and f.mu == {}


@pytest.mark.parametrize("make", [lambda: EMAFilter(0.9, 2.0), lambda: MAFilter(3, 5.0, "mean", False)])
def test_state_dict_round_trip_continues_identically(make, tmp_path):
    torch.manual_seed(0)
    grads = [torch.randn(4, 3) for _ in range(6)]
    p = nn.Parameter(torch.zeros(4, 3))
    f = make()
    for g in grads[:3]:
        p.grad = g.clone()
        f.apply([p])
    torch.save(f.state_dict(), tmp_path / "f.pt")
    g2 = make()
    g2.load_state_dict(torch.load(tmp_path / "f.pt"))
    for g in grads[3:]:
        p.grad = g.clone()
        f.apply([p])
        expected = p.grad.clone()
        p.grad = g.clone()
        g2.apply([p])
        assert torch.equal(p.grad, expected)


def naive_ema(params_grads: list[list[torch.Tensor]], alpha: float, lamb: float):
    """Per-parameter Python loop, written from the definition."""
    mus, out = {}, []
    for grads in params_grads:
        step = []
        for i, g in enumerate(grads):
            mus[i] = g.clone() if i not in mus else alpha * mus[i] + (1 - alpha) * g
            step.append(g + lamb * mus[i])
        out.append(step)
    return out


def naive_ma(params_grads, window, lamb):
    kept, out = {}, []
    for grads in params_grads:
        step = []
        for i, g in enumerate(grads):
            kept.setdefault(i, deque(maxlen=window)).append(g.clone())
            full = len(kept[i]) == window
            step.append(g + lamb * torch.stack(tuple(kept[i])).mean(0) if full else g.clone())
        out.append(step)
    return out


def model_grads(steps: int, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    return model, [[torch.randn_like(p) for p in model.parameters()] for _ in range(steps)]


@pytest.mark.parametrize("kind", ["ema", "ma"])
def test_multi_tensor_filters_match_the_definition_over_many_steps(kind):
    model, seq = model_grads(230)  # several laps of a window of 100
    f = EMAFilter(0.98, 2.0) if kind == "ema" else MAFilter(100, 5.0)
    expected = naive_ema(seq, 0.98, 2.0) if kind == "ema" else naive_ma(seq, 100, 5.0)
    for grads, want in zip(seq, expected):
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        f.apply(model.parameters())
        for p, w in zip(model.parameters(), want):
            torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-5)


# --- the drop-in functions --------------------------------------------------------------------------
# The published rules, restated: EMA seeds the average with g and then applies the update
# mu <- mu*alpha + g*(1-alpha), then g <- g + mu*lamb. MA appends the raw gradient to a deque, and, when
# `not warmup or (window full and not trigger)`, adds lamb * (sum of the deque, divided by its length for
# "mean"), with the sum taken left to right. Each operation below is a separate rounding, as there.

def published_ema(named, state, alpha, lamb):
    if state is None:
        state = {n: g.clone() for n, g in named}
    for n, g in named:
        state[n] = state[n] * alpha + g * (1 - alpha)
        g.copy_(g + state[n] * lamb)
    return state


def published_ma(named, state, window, lamb, filter_type, warmup, trigger):
    if state is None:
        state = {n: deque(maxlen=window) for n, _ in named}
    for n, g in named:
        state[n].append(g.clone())
        if not warmup or (len(state[n]) == window and not trigger):
            total = 0
            for kept in state[n]:
                total = total + kept
            avg = total / len(state[n]) if filter_type == "mean" else total
            g.copy_(g + avg * lamb)
    return state


def test_gradfilter_ema_gives_the_same_numbers_and_state():
    model, seq = model_grads(5)
    ref = [{n: g.clone() for (n, _), g in zip(model.named_parameters(), grads)} for grads in seq]
    ours, theirs = None, None
    for grads, ref_step in zip(seq, ref):
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        ours = gradfilter_ema(model, ours, alpha=0.9, lamb=2.0)
        theirs = published_ema(list(ref_step.items()), theirs, 0.9, 2.0)
        for n, p in model.named_parameters():
            assert torch.equal(p.grad, ref_step[n]), n
    assert ours.keys() == theirs.keys() == dict(model.named_parameters()).keys()
    for n in ours:
        assert torch.equal(ours[n], theirs[n])


@pytest.mark.parametrize("filter_type,warmup,trigger", [
    ("mean", True, False), ("sum", True, False), ("mean", False, False), ("mean", True, True),
    ("mean", False, True),  # as published, trigger has no effect without warmup
])
def test_gradfilter_ma_gives_the_same_numbers_and_state(filter_type, warmup, trigger):
    model, seq = model_grads(7)
    ours, theirs = None, None
    for grads in seq:
        ref = {n: g.clone() for (n, _), g in zip(model.named_parameters(), grads)}
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        ours = gradfilter_ma(model, ours, window_size=3, lamb=5.0, filter_type=filter_type,
                             warmup=warmup, trigger=trigger)
        theirs = published_ma(list(ref.items()), theirs, 3, 5.0, filter_type, warmup, trigger)
        for n, p in model.named_parameters():
            assert torch.equal(p.grad, ref[n]), n
    for n in theirs:
        assert isinstance(ours[n], deque) and ours[n].maxlen == 3
        assert all(torch.equal(a, b) for a, b in zip(ours[n], theirs[n]))


def test_trigger_leaves_gradients_unchanged():
    model, seq = model_grads(4)
    state = None
    for grads in seq:
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        state = gradfilter_ma(model, state, window_size=2, trigger=True)
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


@pytest.mark.parametrize("bad", [dict(alpha=1.0), dict(alpha=-0.1), dict(lamb=-1.0)])
def test_ema_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        EMAFilter(**bad)


@pytest.mark.parametrize("bad", [dict(window_size=0), dict(lamb=-1.0), dict(filter_type="median")])
def test_ma_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        MAFilter(**bad)


def test_registry_names_match_the_classes():
    assert {name: cls.name for name, cls in FILTERS.items()} == {"none": "none", "ema": "ema", "ma": "ma", "orthograd": "orthograd"}
    assert FILTERS["none"] is GradFilter

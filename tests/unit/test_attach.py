"""The filters in any training loop: grokrun.filters.attach(optimizer, filter)."""

import copy
import io

import pytest
import torch
from torch import nn

from grokrun.filters import STATE_KEY, EMAFilter, MAFilter, attach, detach


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, x, y


def loss_of(model, x, y, step):
    i = torch.arange(step % 4 * 16, step % 4 * 16 + 16)
    return nn.functional.mse_loss(model(x[i]), y[i])


@pytest.mark.parametrize("make", [lambda: EMAFilter(0.9, 2.0), lambda: MAFilter(5, 3.0)])
def test_attached_filter_equals_applying_it_by_hand(make):
    by_hand, x, y = problem()
    attached = copy.deepcopy(by_hand)
    opt_a = torch.optim.Adam(by_hand.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(attached.parameters(), lr=1e-2)
    f = make()
    attach(opt_b, make())
    for step in range(50):
        for model, opt in ((by_hand, opt_a), (attached, opt_b)):
            opt.zero_grad()
            loss_of(model, x, y, step).backward()
            if opt is opt_a:
                f.apply(model.parameters())
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(by_hand.parameters(), attached.parameters()))


def test_under_grad_scaler_a_skipped_step_leaves_the_filter_alone():
    """With GradScaler (power-of-two scales: unscaling is exact), an inf gradient at step 10 makes the scaler skip
    that step: the filter must not see it, and the run equals one without a scaler that skips step 10."""
    scaled, x, y = problem()
    plain = copy.deepcopy(scaled)
    opt_s = torch.optim.AdamW(scaled.parameters(), lr=1e-2)
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    attach(opt_s, EMAFilter(0.9, 2.0))
    attach(opt_p, EMAFilter(0.9, 2.0))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for step in range(30):
        opt_s.zero_grad()
        scaler.scale(loss_of(scaled, x, y, step)).backward()
        if step == 10:
            next(scaled.parameters()).grad[0, 0] = float("inf")
        scaler.step(opt_s)
        scaler.update()
        if step != 10:
            opt_p.zero_grad()
            loss_of(plain, x, y, step).backward()
            opt_p.step()
    assert scaler.get_scale() == 2.0**9  # the inf step was seen and skipped
    assert all(torch.equal(a, b) for a, b in zip(scaled.parameters(), plain.parameters()))


def test_its_state_travels_in_the_optimizers_state_dict():
    model, x, y = problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    attach(opt, MAFilter(4, 2.0))

    def train(model, opt, steps):
        for step in steps:
            opt.zero_grad()
            loss_of(model, x, y, step).backward()
            opt.step()

    train(model, opt, range(20))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    assert STATE_KEY in opt.state_dict() and opt.state_dict()[STATE_KEY]["count"]  # the window, saved
    train(model, opt, range(20, 40))
    again, _, _ = problem(seed=5)  # other weights: everything comes from the checkpoint
    opt_again = torch.optim.Adam(again.parameters(), lr=1e-2)
    attach(opt_again, MAFilter(4, 2.0))
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    again.load_state_dict(saved["model"])
    opt_again.load_state_dict(saved["optimizer"])
    train(again, opt_again, range(20, 40))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_detach_stops_filtering():
    model, x, y = problem()
    reference = copy.deepcopy(model)
    opt, opt_ref = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(reference.parameters(), lr=0.1)
    attach(opt, EMAFilter(0.5, 5.0))
    detach(opt)
    for step in range(5):
        for m, o in ((model, opt), (reference, opt_ref)):
            o.zero_grad()
            loss_of(m, x, y, step).backward()
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert STATE_KEY not in opt.state_dict()

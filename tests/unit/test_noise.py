"""--weight-noise and --grad-noise (openai/grok's weight_noise and noise_factor): their definitions, off at
evaluation, seeded, resumed exactly, seeds one after another; and the same run-level guarantees for --reg."""

import pytest
import torch
from torch import nn

from conftest import ctrl_c_at
from conftest import metric_rows as rows
from grokrun.noise import add_update_noise, noisy

SMALL = ["--task", "modular", "--op", "add", "--p", "23", "--train-frac", "0.8", "--width", "64", "--layers", "1",
         "--batch-size", "128", "--lr", "3e-3", "--optimizer", "adamw", "--weight-decay", "1.0", "--quiet",
         "--eval-every", "5", "--arch", "mlp"]


def test_update_noise_is_added_to_adams_normalized_update_before_the_step_size():
    """One AdamW step with --grad-noise σ moves a weight by openai/grok's −lr/(1 − β1^t) (m̂/(√v̂ + ε) + σ ξ),
    its weight decay taking lr·wd·w first: computed here by hand, ξ drawn from the same generator state."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5, dtype=torch.float64))
    w0, g = w.detach().clone(), torch.randn(5, dtype=torch.float64)
    lr, wd, (b1, b2), eps, sigma = 0.01, 0.5, (0.9, 0.98), 1e-8, 0.3
    opt = torch.optim.AdamW([w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    w.grad = g.clone()
    opt.step()
    torch.manual_seed(7)
    add_update_noise(opt, sigma)
    torch.manual_seed(7)
    xi = torch.randn(5, dtype=torch.float64)
    m, v = (1 - b1) * g, (1 - b2) * g * g
    update = (m / (1 - b1)) / ((v / (1 - b2)).sqrt() + eps)  # Adam's step at t = 1, bias-corrected
    expected = w0 * (1 - lr * wd) - lr * update - lr / (1 - b1) * sigma * xi
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-15)


def test_weight_noise_perturbs_every_trainable_weight_and_nothing_else():
    torch.manual_seed(0)
    a, frozen = torch.zeros(1000, requires_grad=True), torch.zeros(3)
    out = noisy({"a": a, "frozen": frozen}, 0.1)
    assert out["frozen"] is frozen and 0.09 < out["a"].std().item() < 0.11
    out["a"].sum().backward()
    assert torch.equal(a.grad, torch.ones(1000))  # the gradient at the noisy weights reaches the weight


@pytest.mark.parametrize("setting", [["--weight-noise", "0.02"], ["--grad-noise", "0.5"],
                                     ["--reg", "grokalign", "--reg-weight", "0.01"]])
def test_a_run_is_seeded_off_at_evaluation_resumes_exactly_and_its_seeds_train_one_after_another(
        cli, tmp_path, monkeypatch, setting):
    from grokrun.filters.base import GradFilter

    args = [*SMALL, "--max-steps", "40", "--checkpoint-every", "10"]
    for name, extra in (("a", setting), ("b", setting), ("none", [])):
        assert cli(["train", *args, *extra, "--out", tmp_path, "--name", name]).exit_code == 0
    a, none = rows(tmp_path / "a"), rows(tmp_path / "none")
    assert a == rows(tmp_path / "b")  # seeded
    # off at evaluation: step 0 (before any step) scores the same weights the same; training differs
    assert {k: v for k, v in a[0].items() if k != "penalty"} == none[0] and a[-1]["val_loss"] != none[-1]["val_loss"]
    with monkeypatch.context() as m:
        ctrl_c_at(m, GradFilter, 23, method="apply")
        assert cli(["train", *args, *setting, "--out", tmp_path, "--name", "cut"]).exit_code == 130
    assert cli(["train", "--resume", tmp_path / "cut"]).exit_code == 0
    assert rows(tmp_path / "cut") == a
    seeds = cli(["train", *SMALL, *setting, "--max-steps", "5", "--seeds", "0,1", "--out", tmp_path / "s"])
    assert seeds.exit_code == 0
    assert f"{' '.join(setting[:2]) if setting[0] == '--reg' else setting[0]} draws each run's random numbers " \
           "alone; its 2 seeds run one after another" in seeds.output


@pytest.mark.parametrize("args, message", [
    (["--grad-noise", "0.1", "--optimizer", "muon"], "--grad-noise adds noise to Adam's (or SGD's) update"),
    (["--grad-noise", "-1"], "--grad-noise must be in [0, 100]"),
    (["--weight-noise", "0.1", "--cuda-graph", "on"],
     "--weight-noise draws its random numbers eagerly: not replayed from CUDA graphs (--cuda-graph off)"),
    (["--dropout", "0.1", "--cuda-graph", "on"],
     "--dropout draws its random numbers eagerly: not replayed from CUDA graphs (--cuda-graph off)"),
])
def test_bad_noise_settings_are_one_line(cli, tmp_path, args, message):
    result = cli(["train", *SMALL, *args, "--max-steps", "2", "--out", tmp_path])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert not any(tmp_path.rglob("config.json"))

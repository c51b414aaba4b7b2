"""The LLC estimate against its known answer: on a loss that is exactly quadratic with d parameters, λ = d/2 (here
the exact expectation of SGLD's discrete chain, which differs from d/2 by the localization and the step size
only), within the estimator's error; reproducible for a seed; and its warnings."""

import math
from importlib.util import find_spec

import pytest
import torch

from grokrun.llc import Estimate, LLCSettings, diagnose, estimate

pytestmark = pytest.mark.skipif(find_spec("devinterp") is None, reason="devinterp is not installed")  # (found, not imported: 1.5 s a worker at collection)


def half_mse(model, x, y):
    return 0.5 * ((model(x).squeeze(-1) - y) ** 2).mean()


def regression(d: int, n: int = 2048):
    """A linear model at the exact minimum of a noise-free regression: L(w) = ½ (w − w*)ᵀ H (w − w*), H = XᵀX / n."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w)
    return model, x, x @ w, torch.linalg.eigvalsh(x.T @ x / n)


def expected(h: torch.Tensor, s: LLCSettings) -> float:
    """nβ E[L − L*] under the chain w ← (1 − ε a / 2) w + √ε ξ per eigendirection (a = nβ h + γ), whose stationary
    variance is 1 / (a (1 − ε a / 4)): ½ Σ nβ h / (a (1 − ε a / 4)); d/2 as γ and ε go to 0."""
    a = s.nbeta * h + s.localization
    return float((0.5 * s.nbeta * h / (a * (1 - s.lr * a / 4))).sum())


@pytest.mark.slow
def test_a_quadratic_loss_with_d_parameters_has_an_llc_of_d_over_2_within_the_estimators_error():
    d = 6
    model, x, y, h = regression(d)
    s = LLCSettings(lr=1e-3, nbeta=100.0, localization=1.0, chains=8, draws=2000, batch_size=len(x), burnin=200)
    est = estimate(model, x, y, half_mse, s)
    target = expected(h, s)
    assert abs(target - d / 2) < 0.15  # (what SGLD's step and the localization change: a few percent)
    error = est.std / math.sqrt(s.chains)
    assert abs(est.mean - target) < 4 * error, (est.mean, target, error)
    assert 0 < error < 0.1 * target  # an error small enough that the test tells d/2 from (d ± 1)/2
    assert est.init_loss < 1e-20 and est.warning is None
    assert len(est.trace) == s.chains and len(est.trace[0]) == s.draws


def test_the_estimate_is_reproducible_for_a_seed_and_leaves_the_model_unchanged():
    model, x, y, _ = regression(3, n=256)
    before = model.weight.detach().clone()
    s = LLCSettings(lr=1e-3, nbeta=50.0, chains=2, draws=50, batch_size=64)
    a, b = estimate(model, x, y, half_mse, s), estimate(model, x, y, half_mse, s)
    assert a.per_chain == b.per_chain and a.trace == b.trace
    assert estimate(model, x, y, half_mse, LLCSettings(**{**s.__dict__, "seed": 1})).per_chain != a.per_chain
    assert torch.equal(model.weight, before)


def test_an_estimate_says_why_it_is_unreliable():
    settled = [[1.0] * 40, [1.1] * 40]
    assert diagnose(Estimate(2.0, 0.1, [1.9, 2.1], 0.0, settled)) is None
    assert diagnose(Estimate(-0.5, 0.1, [-0.4, -0.6], 0.0, settled)).startswith("negative (-0.5)")
    rising = [[i / 10 for i in range(40)]] * 2
    assert diagnose(Estimate(2.0, 0.1, [1.9, 2.1], 0.0, rising)).startswith("not settled")
    assert diagnose(Estimate(2.0, 1.5, [0.5, 3.5], 0.0, settled)).startswith("chains disagree")
    assert diagnose(Estimate(2.0, 0.1, [2.0, 2.0], 0.0, [[1.0, math.inf] * 20] * 2)).startswith("diverged")
    model, x, y, _ = regression(3, n=256)
    blown = estimate(model, x, y, half_mse, LLCSettings(lr=10.0, nbeta=1e4, localization=0.0, chains=1, draws=20,
                                                       batch_size=256))
    assert blown.warning is not None and blown.warning.startswith("diverged")


def test_analyze_adds_the_llc_to_the_progress_measures_of_every_snapshot(cli, tmp_path):
    import csv

    run = tmp_path / "r"
    trained = cli(["train", "--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1",
                   "--heads", "2", "--batch-size", "32", "--eval-every", "10", "--max-steps", "30", "--snapshots", "10",
                   "--quiet", "--out", tmp_path, "--name", "r"])
    assert trained.exit_code == 0, trained.output
    args = ["analyze", run, "--llc", "--llc-draws", "20", "--llc-chains", "2", "--llc-batch-size", "16"]
    result = cli(args)
    assert result.exit_code == 0, result.output
    assert "LLC at 4 snapshots" in result.stdout
    rows = list(csv.DictReader(open(run / "progress.csv")))
    assert [r["step"] for r in rows] == ["0", "10", "20", "30"]
    assert all(r["llc"] and r["llc_std"] for r in rows)
    first = [float(r["llc"]) for r in rows]
    assert cli(args).exit_code == 0  # the same seed: the same estimates
    assert [float(r["llc"]) for r in csv.DictReader(open(run / "progress.csv"))] == first
    every = cli([*args, "--llc-every", "2"])
    assert every.exit_code == 0 and "LLC at 3 snapshots" in every.stdout  # 0, 20 and the last
    bad = cli([*args, "--llc-chains", "0"])
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: --llc-chains must be in [1, 64], got 0"


def test_without_devinterp_the_llc_is_one_line(cli, tmp_path, monkeypatch, make_run):
    import sys

    monkeypatch.setitem(sys.modules, "devinterp.optim.sgld", None)
    result = cli(["analyze", make_run(tmp_path / "r", val_acc=[0.1, 0.5]), "--llc"])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --llc needs devinterp 1.x: pip install 'grokrun[interp]'"

"""A new filter or optimizer is one entry in its registry, and works with every task through the CLI."""

import csv
import json
from dataclasses import dataclass
from types import SimpleNamespace

import matplotlib
import pytest
import torch

from grokrun.errors import UserError
from grokrun.filters import GradFilter
from grokrun.optim import make_optimizer

from fakedata import needs_preprocessed, synthetic_mnist, write_csv, write_qm9


class SignFilter(GradFilter):
    """g <- g + lamb * sign(g): a filter that exists only in this test, registered at test time."""

    name = "sign"

    @dataclass
    class Settings:
        lamb: float = 0.01
        """Amplification of the slow gradient, >= 0."""

    def __init__(self, lamb: float = 0.01):
        self.lamb = lamb

    def _filter(self, keys, grads, amplify):
        if amplify:
            torch._foreach_add_(grads, torch._foreach_sign(grads), alpha=self.lamb)


def modular_args(tmp_path):
    return ["--op", "add", "--p", "11", "--train-frac", "0.8", "--width", "32", "--layers", "1", "--heads", "2",
            "--batch-size", "32", "--eval-every", "3"]


def mnist_args(tmp_path):
    return ["--data-dir", synthetic_mnist(tmp_path / "data", n_train=100, n_test=50), "--no-download",
            "--train-points", "100", "--batch-size", "20"]


def imdb_args(tmp_path):
    return ["--data-file", write_csv(tmp_path / "reviews.csv", n=40), "--size", "40", "--vocab-size", "20",
            "--seq-len", "12", "--embedding-dim", "8", "--width", "8", "--layers", "1", "--init-scale", "1.0",
            "--batch-size", "10"]


def qm9_args(tmp_path):
    return ["--data-dir", write_qm9(tmp_path / "data", n=20), "--no-download", "--size", "20", "--batch-size", "5"]


def parity_args(tmp_path):
    return ["--n-bits", "6", "--k", "2", "--samples", "64", "--width", "16", "--batch-size", "16"]


TASK_ARGS = {"modular": modular_args, "mnist": mnist_args, "imdb": imdb_args,
             "qm9": pytest.param(qm9_args, marks=needs_preprocessed), "parity": parity_args}
FILTER_ARGS = {  # settings that make each filter act within a few steps, and how titles must name it
    "sign": (["--lamb", "0.001"], "sign lamb=0.001"),
    "ma": (["--window-size", "2"], "MA window 2 λ=5"),  # MA's own lamb where no task published one
}


@pytest.fixture
def sign_filter():
    from grokrun import plugins

    plugins.register("filter", "sign", SignFilter, source="this test")  # as a plugin's filter registers


def last_train_loss(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["train_loss"])


@pytest.mark.parametrize("filt", FILTER_ARGS)
@pytest.mark.parametrize("task_args", TASK_ARGS.values(), ids=TASK_ARGS.keys())
def test_every_filter_trains_every_task_and_is_named_in_titles_and_legends(
        cli, task_args, filt, sign_filter, tmp_path, monkeypatch):
    task = task_args.__name__.removesuffix("_args")
    flags, described = FILTER_ARGS[filt]
    out = tmp_path / "cmp"
    result = cli(["compare", "--task", task, "--filter", filt, *task_args(tmp_path), *flags, "--max-steps", "6",
                  "--seeds", "0", "--out", out, "--quiet", "--format", "svg"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / f"{filt}-seed0" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["filter"] == filt
    assert summary["title"]["variant"].startswith(f"{described} · ")
    assert last_train_loss(out / f"{filt}-seed0") != last_train_loss(out / "baseline-seed0")  # the filter acted
    # the legend and the per-run titles name it: SVG text kept as text, to read it back
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")
    assert cli(["plot", out, "--format", "svg"]).exit_code == 0
    assert f"{filt}: {described} · " in (out / "comparison.svg").read_text()
    assert f"{described} · " in (out / f"{filt}-seed0" / "loss.svg").read_text()
    assert "no filter" in (out / "baseline-seed0" / "loss.svg").read_text()


def test_an_unknown_optimizer_is_an_error_never_another_optimizer():
    params = [torch.nn.Parameter(torch.zeros(2))]
    settings = SimpleNamespace(name="lino", lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.0, optimizer_args="")
    with pytest.raises(UserError, match="unknown optimizer 'lino'; choose one of: adam, adamw, sgd, muon, or "):
        make_optimizer(settings, params)
    assert type(make_optimizer(SimpleNamespace(**{**vars(settings), "name": "sgd"}), params)).__name__ == "SGD"

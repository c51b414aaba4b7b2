"""--optimizer muon: Muon for the hidden matrices, AdamW for the rest; one run's model, seeds one after another."""

import json

import pytest
import torch

from conftest import ctrl_c_at
from conftest import metric_rows as rows
from grokrun.config import resolve
from grokrun.models import Decoder, PairMLP
from grokrun.muon import split
from grokrun.optim import make_optimizer

SMALL = ["--task", "modular", "--op", "add", "--p", "23", "--train-frac", "0.8", "--width", "64", "--layers", "1",
         "--batch-size", "128", "--optimizer", "muon", "--lr", "3e-3", "--weight-decay", "1.0", "--quiet"]



def test_the_hidden_matrices_go_to_muon_and_the_embeddings_head_and_vectors_to_adamw():
    muon, adamw = split(Decoder(vocab=13, width=16, layers=2, heads=2))
    assert muon == [f"blocks.{i}.{n}" for i in (0, 1) for n in ("qkv_weight", "proj.weight", "mlp.0.weight",
                                                                  "mlp.2.weight")]
    assert {"tok.weight", "pos.weight", "head.weight", "ln_f.weight", "blocks.0.qkv_bias"} <= set(adamw)
    assert len(muon) + len(adamw) == len(list(Decoder(13, 16, 2, 2).parameters()))
    muon, adamw = split(PairMLP(symbols=7, width=8, layers=2))  # the last layer is the output: AdamW
    assert muon == ["first.weight", "rest.1.weight"] and "rest.3.weight" in adamw


def test_each_part_steps_with_its_own_settings():
    torch.manual_seed(0)
    model = Decoder(vocab=13, width=16, layers=1, heads=2)
    o = resolve(None, {"optim.name": "muon", "optim.muon_lr": 0.05, "optim.lr": 0.002, "optim.ns_steps": 3}).optim
    names, params = zip(*model.named_parameters())
    opt = make_optimizer(o, list(params), list(names), model)
    muon, adamw = opt.parts
    assert type(muon).__name__ == "Muon" and muon.param_groups[0]["lr"] == 0.05
    assert muon.param_groups[0]["ns_steps"] == 3 and type(adamw).__name__ == "AdamW"
    assert adamw.param_groups[0]["lr"] == 0.002
    before = model.head.weight.detach().clone()
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5)  # a schedule reaches both parts
    assert muon.param_groups[0]["lr"] == 0.025 and adamw.param_groups[0]["lr"] == 0.001
    model(torch.randint(0, 13, (4, 4))).sum().backward()
    opt.step()
    scheduler.step()
    assert not torch.equal(before, model.head.weight) and muon.state and adamw.state


def test_the_adamw_part_steps_in_torchs_multi_tensor_loop_with_the_per_tensor_loops_weights():
    """Muon's AdamW is built with foreach=True, as grokrun's adamw (tests/unit/test_optim.py): after 20 steps the
    whole model's weights are those of the same optimizer with its AdamW in torch's per-tensor loop, bit for bit."""
    o = resolve(None, {"optim.name": "muon", "optim.weight_decay": 0.1}).optim
    models, opts = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = Decoder(vocab=13, width=16, layers=1, heads=2)
        names, params = zip(*model.named_parameters())
        models.append(model)
        opts.append(make_optimizer(o, list(params), list(names), model))
    assert opts[0].parts[1].param_groups[0]["foreach"] is True
    for group in opts[1].parts[1].param_groups:
        group["foreach"] = False  # (read at each step: torch's default on the CPU)
    x = torch.randint(0, 13, (8, 4), generator=torch.Generator().manual_seed(1))
    for _ in range(20):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    torch.manual_seed(0)
    start = Decoder(vocab=13, width=16, layers=1, heads=2).head.weight
    a, b = (dict(m.named_parameters()) for m in models)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["head.weight"], start)  # (AdamW's: it stepped)


def test_muon_groks_the_small_problem_and_lists_its_groups(cli, tmp_path):
    """x + y mod 23: 99% validation accuracy by step 280 here (AdamW with the same --lr: 816)."""
    result = cli(["train", *SMALL, "--max-steps", "800", "--stop-at-acc", "0.99", "--out", tmp_path, "--name", "m"])
    assert result.exit_code == 0, result.output
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["status"] == "stopped_at_target" and s["steps"] <= 600
    assert "blocks.0.qkv_weight" in s["optimizer_groups"]["muon"] and "head.weight" in s["optimizer_groups"]["adamw"]


def test_seeds_train_one_after_another_each_as_alone(cli, tmp_path):
    result = cli(["train", *SMALL, "--max-steps", "12", "--eval-every", "4", "--seeds", "0,1", "--out", tmp_path / "s"])
    assert result.exit_code == 0, result.output
    assert "the muon optimizer is not known to step stacked seeds as alone; its 2 seeds run one " \
           "after another" in result.output
    alone = cli(["train", *SMALL, "--max-steps", "12", "--eval-every", "4", "--seed", "1", "--out", tmp_path / "a",
                 "--name", "one"])
    assert alone.exit_code == 0
    assert rows(tmp_path / "s" / "modular-none-seeds0-1" / "seed1") == rows(tmp_path / "a" / "one")


@pytest.mark.parametrize("schedule", [[], ["--warmup-steps", "30"]])
def test_an_interrupted_muon_run_resumes_to_the_uninterrupted_numbers(cli, tmp_path, monkeypatch, schedule):
    """Resumed after the warmup, and within it: the learning-rate schedule reaches both parts after the resume
    (their loaded groups are the combined optimizer's), so the rates go on changing as in the uninterrupted run."""
    from grokrun.filters.base import GradFilter

    args = [*SMALL, "--max-steps", "40", "--eval-every", "5", "--checkpoint-every", "10", *schedule]
    with monkeypatch.context() as m:
        ctrl_c_at(m, GradFilter, 23, method="apply")
        cut = cli(["train", *args, "--out", tmp_path, "--name", "cut"])
    assert cut.exit_code == 130, cut.output
    assert cli(["train", "--resume", tmp_path / "cut"]).exit_code == 0
    assert cli(["train", *args, "--out", tmp_path, "--name", "full"]).exit_code == 0
    assert rows(tmp_path / "cut") == rows(tmp_path / "full")

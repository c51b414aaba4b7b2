"""Low-rank adapters (--lora-rank) and starting from a trained run (--init-from), on the modular and MNIST models."""

import json

import torch

from conftest import metric_rows as rows
from fakedata import synthetic_mnist

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--quiet"]



def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


def train(cli, tmp_path, name, *args):
    result = cli(["train", *args, "--out", tmp_path, "--name", name])
    assert result.exit_code == 0, result.output
    return tmp_path / name


def test_adapters_start_at_zero_and_only_they_train(cli, tmp_path):
    plain = train(cli, tmp_path, "plain", *TINY, "--max-steps", "1", "--lr", "1e-9")  # ~ its initial weights
    lora = train(cli, tmp_path, "lora", *TINY, "--max-steps", "40", "--lora-rank", "2", "--filter", "ema")
    same = {k: v for k, v in rows(lora)[0].items() if k != "weight_norm"}  # (the norm counts the A matrices too)
    assert same == {k: v for k, v in rows(plain)[0].items() if k != "weight_norm"}  # B = 0: the same function
    initial = torch.load(plain / "checkpoint.pt", weights_only=False)["model"]
    trained = weights(lora)
    frozen = {k.replace(".base.", "."): v for k, v in trained.items() if "lora" not in k}
    assert frozen.keys() == initial.keys()
    for key, value in frozen.items():  # (the plain run took one step at lr 1e-9 after a step at lr 0)
        assert torch.allclose(value, initial[key], rtol=0, atol=1e-7), key
    assert all(trained[k].abs().sum() > 0 for k in trained if "lora_b" in k)  # the adapters moved
    summary = json.loads((lora / "summary.json").read_text())
    assert summary["parameters"] == {"trainable": 570, "total": 4378}  # adapters of rank 2 on 5 maps


def test_frozen_weights_are_bit_identical_after_training(cli, tmp_path):
    start = train(cli, tmp_path, "start", *TINY, "--max-steps", "20")
    lora = train(cli, tmp_path, "lora", *TINY, "--max-steps", "30", "--lora-rank", "3", "--lora-alpha", "6",
                 "--init-from", start, "--weight-decay", "1.0", "--optimizer", "adamw")
    base, trained = weights(start), weights(lora)
    for key, value in trained.items():
        if "lora" not in key:
            assert torch.equal(value, base[key.replace(".base.", ".")]), key  # decay acts on what trains only


def test_init_from_starts_at_the_runs_final_weights(cli, tmp_path):
    first = train(cli, tmp_path, "first", *TINY, "--max-steps", "24")
    second = train(cli, tmp_path, "second", *TINY, "--max-steps", "8", "--init-from", first)
    end, start = rows(first)[-1], rows(second)[0]
    assert [start[k] for k in ("val_loss", "val_acc", "weight_norm", "train_acc")] == \
        [end[k] for k in ("val_loss", "val_acc", "weight_norm", "train_acc")]


def test_init_from_a_run_of_another_shape_is_one_line(cli, tmp_path):
    other = train(cli, tmp_path, "other", *[a if a != "16" else "32" for a in TINY], "--max-steps", "2")
    result = cli(["train", *TINY, "--max-steps", "2", "--init-from", other, "--out", tmp_path / "new"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --init-from {other}: its weights do not fit this model "
                                     "(blocks.0.ln1.bias is (32,) there and (16,) here); start from a run of the "
                                     "same task and size")
    assert not (tmp_path / "new").exists()
    result = cli(["train", *TINY, "--init-from", tmp_path / "nowhere", "--out", tmp_path / "new"])
    assert result.exit_code == 2 and "no run directory with a checkpoint.pt there" in result.stderr


def test_lora_on_the_mnist_mlp_and_seeds_together(cli, tmp_path):
    data = synthetic_mnist(tmp_path / "data")
    args = ["--task", "mnist", "--data-dir", data, "--no-download", "--train-points", "100", "--max-steps", "20",
            "--lora-rank", "4", "--quiet", "--dtype", "float64"]
    together = cli(["train", *args, "--seeds", "0,1", "--out", tmp_path / "t"])
    assert together.exit_code == 0, together.output
    alone = train(cli, tmp_path, "alone", *args, "--seed", "1")
    stacked = tmp_path / "t" / "mnist-none-seeds0-1" / "seed1"
    for a, b in zip(rows(stacked), rows(alone)):
        for key in a:
            assert (a[key] == b[key]) if not a[key] else abs(float(a[key]) - float(b[key])) <= 1e-9 * abs(float(b[key]))
    summary = json.loads((alone / "summary.json").read_text())
    # 784-200-200-10 with rank 4 on each of the 3 linear maps
    assert summary["parameters"]["trainable"] == 4 * (784 + 200) + 4 * (200 + 200) + 4 * (200 + 10)

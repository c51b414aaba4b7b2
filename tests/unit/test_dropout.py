"""--dropout: where it goes, on at training and off at evaluation, seeded, resumed exactly, never stacked."""


import pytest
import torch
from torch import nn

from conftest import ctrl_c_at
from conftest import metric_rows as rows
from fakedata import write_csv
from grokrun.dropout import add_dropout
from grokrun.errors import UserError
from grokrun.models import Decoder, PairMLP, mlp

SMALL = ["--task", "modular", "--op", "add", "--p", "23", "--train-frac", "0.8", "--width", "64", "--layers", "1",
         "--batch-size", "128", "--lr", "3e-3", "--optimizer", "adamw", "--weight-decay", "1.0", "--quiet",
         "--dropout", "0.3", "--eval-every", "5"]



def test_it_goes_on_the_feed_forward_outputs_and_after_the_activations_keeping_the_weights_keys():
    decoder = Decoder(vocab=13, width=16, layers=2, heads=2)
    keys = list(decoder.state_dict())
    add_dropout(decoder, 0.2, "modular")
    assert [type(m).__name__ for m in decoder.blocks[0].mlp] == ["Linear", "GELU", "Linear", "Dropout"]
    assert list(decoder.state_dict()) == keys
    for model in (PairMLP(7, 8, 2, "relu"), mlp(3, 8, "ReLU", inputs=5, outputs=2)):
        keys = list(model.state_dict())
        add_dropout(model, 0.2, "x")
        assert list(model.state_dict()) == keys
        assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2  # after each hidden activation
    with pytest.raises(UserError, match=r"^--dropout: the qm9 model \(LSTM\) has no place for it"):
        add_dropout(nn.LSTM(3, 4), 0.2, "qm9")


def test_masks_at_training_none_at_evaluation():
    torch.manual_seed(0)
    model = mlp(2, 64, "ReLU", inputs=5, outputs=3)
    add_dropout(model, 0.5, "mnist")
    x = torch.randn(8, 5)
    model.train()
    assert not torch.equal(model(x), model(x))  # a new mask each forward
    model.eval()
    assert torch.equal(model(x), model(x))


def test_a_run_is_seeded_resumes_exactly_and_its_seeds_train_one_after_another(cli, tmp_path, monkeypatch):
    from grokrun.filters.base import GradFilter

    args = [*SMALL, "--max-steps", "40", "--checkpoint-every", "10"]
    a = cli(["train", *args, "--out", tmp_path, "--name", "a"])
    b = cli(["train", *args, "--out", tmp_path, "--name", "b"])
    none = cli(["train", *args[:-8], "--max-steps", "40", "--eval-every", "5", "--out", tmp_path, "--name", "none"])
    assert a.exit_code == b.exit_code == none.exit_code == 0
    assert rows(tmp_path / "a") == rows(tmp_path / "b") != rows(tmp_path / "none")  # seeded, and it does something
    with monkeypatch.context() as m:
        ctrl_c_at(m, GradFilter, 23, method="apply")
        assert cli(["train", *args, "--out", tmp_path, "--name", "cut"]).exit_code == 130
    assert cli(["train", "--resume", tmp_path / "cut"]).exit_code == 0
    assert rows(tmp_path / "cut") == rows(tmp_path / "a")
    seeds = cli(["train", *SMALL, "--max-steps", "5", "--seeds", "0,1", "--out", tmp_path / "s"])
    assert seeds.exit_code == 0
    assert "--dropout draws each run's random numbers alone; its 2 seeds run one after another" in seeds.output


def test_a_model_without_a_place_for_it_is_one_line(cli, tmp_path):
    data = tmp_path / "reviews.csv"
    write_csv(data)
    result = cli(["train", "--task", "imdb", "--data-file", data, "--size", "40", "--vocab-size", "30", "--seq-len",
                  "8", "--dropout", "0.1", "--max-steps", "2", "--quiet", "--out", tmp_path / "runs"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --dropout: the imdb model (")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))

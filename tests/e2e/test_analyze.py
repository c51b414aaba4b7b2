"""grokrun analyze: Fourier key frequencies, PCA circles and progress measures against known answers, and on a
real run that groks here in seconds."""

import csv
import json
import math
import shutil

import pytest
import torch

from grokrun import analyze as an
from grokrun import snapshots

# x+y mod 23, 60% to train, a one-layer decoder without LayerNorm (Nanda et al.'s shape, small), full batch,
# AdamW lr 3e-3 with weight decay 3: reaches 99% validation accuracy at about step 550 (about 10 s here).
GROKS = ["--task", "modular", "--op", "add", "--p", "23", "--train-frac", "0.6", "--layers", "1", "--no-layernorm",
         "--activation", "relu", "--optimizer", "adamw", "--lr", "3e-3", "--weight-decay", "3", "--beta2", "0.98",
         "--batch-size", "100000", "--eval-every", "50", "--quiet"]


def cosine_embedding(p, freqs, width=16, seed=0):
    """Residues embedded as cos and sin of the given frequencies, each along its own random direction (orthonormal
    directions: so each frequency's pair is a circle, not an ellipse, in the embedding space)."""
    x = torch.arange(p, dtype=torch.float64)
    columns = []
    for k in freqs:
        columns += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    features = torch.stack(columns, 1)
    gaussian = torch.randn(width, features.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    directions = torch.linalg.qr(gaussian).Q.T  # (2 * len(freqs), width), orthonormal rows
    return features @ directions


def test_fourier_basis_is_orthonormal():
    for p in (7, 12, 23):
        basis, freqs = an.fourier_basis(p)
        assert basis.shape == (p, p) and freqs[0] == 0 and max(freqs) == p // 2
        assert torch.allclose(basis @ basis.T, torch.eye(p, dtype=torch.float64), atol=1e-12)


def test_cosines_at_3_and_7_give_key_frequencies_3_and_7_and_a_circle():
    emb = cosine_embedding(31, [3, 7])
    norms = an.frequency_norms(emb)
    assert an.key_frequencies(norms) == [3, 7]
    assert an.key_share(norms, [3, 7]) == pytest.approx(1.0, abs=1e-12)
    # one frequency alone: its two principal components put the residues on a circle, in the order 3x mod p
    emb = cosine_embedding(31, [3])
    coords = an.pca(emb, 2)
    radius = coords.norm(dim=1)
    assert torch.allclose(radius, radius.mean().expand_as(radius), rtol=1e-9)
    angle = torch.atan2(coords[:, 1], coords[:, 0])
    order = an.circle_order(31, 3)
    steps = torch.remainder(angle[order[1:] + order[:1]] - angle[order], 2 * math.pi)
    assert torch.allclose(steps, torch.full_like(steps, 2 * math.pi / 31)) or \
        torch.allclose(steps, torch.full_like(steps, 2 * math.pi - 2 * math.pi / 31))  # either way round
    assert an.best_frequency(coords, [1, 3, 7]) == 3


def test_a_random_embedding_has_no_key_frequency():
    emb = torch.randn(97, 128, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert an.key_frequencies(an.frequency_norms(emb)) == []


def grid_logits(p, keys, extra=None, seed=0):
    """Logits L(a, b, c) = bias(c) + sum over keys of r_k cos(w_k (a + b - c) + phi_k) on the flattened grid."""
    g = torch.Generator().manual_seed(seed)
    a = torch.arange(p).repeat_interleave(p).double()[:, None]
    b = torch.arange(p).repeat(p).double()[:, None]
    c = torch.arange(p).double()[None, :]
    logits = torch.randn(1, p, generator=g, dtype=torch.float64)
    for k in keys:
        r, phi = 1 + torch.rand(1, generator=g, dtype=torch.float64), torch.rand(1, generator=g, dtype=torch.float64)
        logits = logits + 3 * r * torch.cos(2 * math.pi * k * (a + b - c) / p + phi)
    for k in extra or []:
        logits = logits + 2 * torch.cos(2 * math.pi * k * (a - b) / p)
    return logits, ((a + b) % p).long().squeeze(1)


def test_restricted_loss_of_logits_made_of_the_key_frequencies_is_the_full_loss():
    p, keys = 17, [2, 5]
    logits, y = grid_logits(p, keys)
    directions = an.sum_directions(p, keys)
    restricted = an.restricted_logits(logits, directions)
    assert torch.allclose(restricted, logits, atol=1e-10)
    assert an.cross_entropy(restricted, y) == pytest.approx(an.cross_entropy(logits, y), rel=1e-12)
    # excluding the key frequencies leaves only the bias: the loss of a constant guess per output
    excluded = an.excluded_logits(logits, directions)
    assert torch.allclose(excluded, logits.mean(0, keepdim=True).expand_as(logits), atol=1e-10)
    # other components (here functions of a - b) are what restriction removes and exclusion keeps
    noisy, _ = grid_logits(p, keys, extra=[3])
    assert torch.allclose(an.restricted_logits(noisy, directions), logits, atol=1e-10)
    assert not torch.allclose(an.excluded_logits(noisy, directions), excluded, atol=1e-3)


def test_directions_are_orthonormal():
    d = an.sum_directions(12, [1, 4, 6])  # 6 = p / 2: its sin is zero and left out
    assert d.shape == (5, 144)
    assert torch.allclose(d @ d.T, torch.eye(5, dtype=torch.float64), atol=1e-12)


@pytest.mark.slow
def test_a_run_that_groks_has_a_few_key_frequencies_after_and_none_at_step_0(cli, tmp_path):
    result = cli(["train", *GROKS, "--max-steps", "800", "--out", tmp_path, "--name", "groks"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "groks"
    steps = snapshots.saved_steps(run)
    # log-spaced, each moved to an evaluation (every 50 steps here): no point where the loop waits is added
    assert steps[0] == 0 and steps[-1] == 800 and all(s % 50 == 0 for s in steps) and len(steps) >= 10
    result = cli(["analyze", run])
    assert result.exit_code == 0, result.output
    for name in ("embedding_pca.png", "embedding_pca.gif", "fourier.png", "fourier.json", "progress.png",
                 "progress.csv"):
        assert (run / name).stat().st_size > 0, name
    fourier = json.loads((run / "fourier.json").read_text())
    assert 1 <= len(fourier["key_frequencies"]) <= 4 and fourier["key_share"] > 0.6
    assert "key frequencies" in result.stdout and "generalized at step" in result.stdout
    with open(run / "progress.csv", newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    first, last = rows[0], rows[-1]
    assert first["step"] == 0 and last["step"] == 800
    # the snapshots' accuracies are those the run measured at the same steps (the splits read off the grid)
    with open(run / "metrics.csv", newline="") as f:
        measured = {int(r["step"]): r for r in csv.DictReader(f)}
    for r in rows:
        m = measured[int(r["step"])]
        assert r["test_acc"] == float(m["val_acc"]), r["step"]
        assert r["test_loss"] == pytest.approx(float(m["val_loss"]), rel=1e-3, abs=1e-6)
        if m["train_acc"]:  # (the run scores its training split at some evaluations only: here 2 of these)
            assert r["train_acc"] == float(m["train_acc"]), r["step"]
    assert sum(bool(measured[int(r["step"])]["train_acc"]) for r in rows) >= 2
    # at step 0 the embedding has no structure: no key frequency of its own, and the final keys carry about their
    # uniform share
    cfg, task, _, _ = an.load_run(run)
    task.model.load_state_dict(snapshots.load(run, 0))
    assert an.key_frequencies(an.frequency_norms(an.embedding_of(task.model, 23))) == []
    assert first["fourier_sparsity"] < 2.0 * len(fourier["key_frequencies"]) / 11
    assert last["test_acc"] == 1.0 and last["fourier_sparsity"] > 0.6
    # Nanda et al.'s signatures: the restricted loss falls before the test loss, the excluded loss rises
    middle = next(r for r in rows if r["test_acc"] >= 0.1)
    assert middle["restricted_loss"] < middle["test_loss"] / 2
    assert last["excluded_loss"] > 2 * last["train_loss"] and last["excluded_loss"] > first["excluded_loss"]
    assert last["weight_norm"] < first["weight_norm"]


def test_analyze_refuses_what_it_cannot_read(cli, tmp_path, make_run):
    missing = cli(["analyze", tmp_path / "nowhere"])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    make_run(tmp_path / "mnist-run", task="mnist", val_acc=[0.1, 0.5])
    other = cli(["analyze", tmp_path / "mnist-run"])
    assert other.exit_code == 2 and "is a mnist run" in other.output
    result = cli(["train", *GROKS, "--max-steps", "3", "--snapshots", "off", "--out", tmp_path, "--name", "plain"])
    assert result.exit_code == 0, result.output
    bare = cli(["analyze", tmp_path / "plain"])
    assert bare.exit_code == 2 and "--snapshots" in bare.output and len(bare.output.strip().splitlines()) == 1
    assert not (tmp_path / "plain" / "fourier.json").exists()
    bad = cli(["train", *GROKS, "--snapshots", "sometimes", "--out", tmp_path])
    assert bad.exit_code == 2 and "--snapshots must be log, off or a number" in bad.output


def test_a_resumed_run_rewrites_the_snapshots_after_its_checkpoint(cli, tmp_path, monkeypatch):
    """Killed after its checkpoint at step 20 with snapshots to 40 written: resuming forgets those after 20 and
    writes them again, equal to an uninterrupted run's."""
    from grokrun import checkpoint

    saved, original = {}, checkpoint.save

    def save_and_keep(run_dir, state):
        original(run_dir, state)
        saved[state["step"]] = (run_dir / "checkpoint.pt").read_bytes()

    monkeypatch.setattr(checkpoint, "save", save_and_keep)
    result = cli(["train", *GROKS, "--max-steps", "40", "--snapshots", "5", "--checkpoint-every", "20",
                  "--out", tmp_path, "--name", "full"])
    assert result.exit_code == 0, result.output
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    shutil.copytree(full, crashed)
    (crashed / "summary.json").unlink()
    (crashed / "checkpoint.pt").write_bytes(saved[20])
    snapshots.path(crashed, 35).write_bytes(b"from a previous life")
    resumed = cli(["train", "--resume", crashed, "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert snapshots.saved_steps(crashed) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    for step in (25, 35, 40):
        a, b = snapshots.load(full, step), snapshots.load(crashed, step)
        assert all(torch.equal(a[k], b[k]) for k in a), step


def test_analyze_refuses_a_file_an_edited_config_a_damaged_snapshot_and_a_read_only_run(cli, tmp_path, monkeypatch):
    result = cli(["train", *GROKS, "--max-steps", "4", "--snapshots", "2", "--out", tmp_path, "--name", "r"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "r"

    def one_line(result, text):
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and text in lines[0], result.stderr

    one_line(cli(["analyze", run / "config.json"]), f"{run / 'config.json'} is a file; give a run directory")
    config = json.loads((run / "config.json").read_text())
    edited = json.loads(json.dumps(config))
    edited["modular"]["op"] = "sub"  # same shapes, another table: the numbers would be quietly wrong
    (run / "config.json").write_text(json.dumps(edited))
    one_line(cli(["analyze", run]), f"{run / 'config.json'} says modular.op = 'sub', but the run trained with 'add'")
    edited["modular"]["op"], edited["modular"]["width"] = "add", 2 * config["modular"]["width"]
    (run / "config.json").write_text(json.dumps(edited))
    one_line(cli(["analyze", run]), "says modular.width = ")
    (run / "config.json").write_text(json.dumps(config))
    good = snapshots.path(run, 2).read_bytes()
    snapshots.path(run, 2).write_bytes(good[: len(good) // 2])  # cut short
    one_line(cli(["analyze", run]), f"cannot read {snapshots.path(run, 2)} as this run's weights")
    snapshots.path(run, 2).write_bytes(good)

    def read_only(path, *args, **kwargs):  # (as a read-only folder answers; root may write anywhere, so pretend)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(an, "write_json_atomic", read_only)
    one_line(cli(["analyze", run]), f"cannot write the figures into {run}: Permission denied")


def test_a_folder_of_mixed_runs_analyzes_those_it_can(cli, tmp_path, make_run):
    result = cli(["train", *GROKS, "--max-steps", "4", "--snapshots", "2", "--out", tmp_path, "--name", "r"])
    assert result.exit_code == 0, result.output
    make_run(tmp_path / "mnist-run", task="mnist", val_acc=[0.1, 0.5])
    mixed = cli(["analyze", tmp_path])
    assert mixed.exit_code == 0, mixed.output
    assert f"warning: skipping {tmp_path / 'mnist-run'}: " in mixed.stderr
    assert (tmp_path / "r" / "fourier.json").is_file()

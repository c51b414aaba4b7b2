"""Long runs survive: a stopped or crashed run resumes to the same numbers; checkpoints are whole or absent."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import ctrl_c_at
from grokrun import checkpoint
from grokrun.results import CHECKPOINT, atomic_write, write_json_atomic


# The engine tests' small problem, long enough (about 2 s) to be interrupted part-way from outside.
ARGS = ["--task", "modular", "--op", "add", "--p", "23", "--train-frac", "0.8", "--width", "64", "--layers", "1",
        "--batch-size", "128", "--lr", "3e-3", "--optimizer", "adamw", "--weight-decay", "1.0", "--filter", "ema",
        "--eval-every", "25", "--max-steps", "700", "--quiet"]


def train(cli, *args):
    result = cli(["train", *args])
    assert "Traceback" not in result.output, result.output
    return result


def rows(path):
    """metrics.csv without the wall-clock column."""
    lines = (path / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name != "wall_s"]
    return [[line.split(",")[i] for i in keep] for line in lines]


def summary(path):
    return json.loads((path / "summary.json").read_text())


@pytest.mark.slow
def test_sigint_then_resume_gives_the_uninterrupted_run(cli, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "grokrun", "train", *ARGS, "--out", str(out), "--name", "cut"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cut = out / "cut"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is well into training, then press Ctrl-C
        if (cut / "metrics.csv").is_file() and len((cut / "metrics.csv").read_text().splitlines()) > 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    s = summary(cut)
    assert s["status"] == "interrupted" and 275 <= s["steps"] < 700, s
    assert f"continue with: grokrun train --resume {cut}" in stdout

    at = checkpoint.step_of(cut)
    resumed = train(cli, "--resume", str(cut))
    assert resumed.exit_code == 0, resumed.output
    full = train(cli, *ARGS, "--out", str(out), "--name", "full")
    assert full.exit_code == 0, full.output
    assert rows(cut) == rows(out / "full")  # row for row, every column but wall-clock
    a, b = summary(cut), summary(out / "full")
    assert a["status"] == b["status"] == "completed" and a["steps"] == b["steps"] == 700
    assert a["steps_to_val_acc"] == b["steps_to_val_acc"] and a["min_val_loss"] == b["min_val_loss"]
    assert a["wall_s"] > 0 and a["ms_per_step"] > 0
    here = socket.gethostname()  # where each part ran: started here, resumed here from the interruption's checkpoint
    assert a["ran_on"] == [{"host": here, "node": "local", "from_step": 0},
                           {"host": here, "node": "local", "from_step": at}]
    assert b["ran_on"] == [{"host": here, "node": "local", "from_step": 0}]

    again = train(cli, "--resume", str(cut))
    assert again.exit_code == 0 and again.stdout.strip() == (
        f"{cut} has already ended (completed after 700 steps); nothing to resume")


def test_a_crash_after_a_checkpoint_resumes_from_it(cli, tmp_path, monkeypatch):
    """A run killed outright (no summary) with evaluations past its last checkpoint: those rows are redone."""
    out = tmp_path / "runs"
    short = [a for a in ARGS] + ["--checkpoint-every", "100"]
    short[short.index("--max-steps") + 1] = "400"
    saves = []
    original = checkpoint.save

    def save_and_keep(run_dir, state):
        original(run_dir, state)
        shutil.copy(run_dir / CHECKPOINT, tmp_path / f"ckpt-{state['step']}.pt")
        saves.append(state["step"])

    monkeypatch.setattr(checkpoint, "save", save_and_keep)
    assert train(cli, *short, "--out", str(out), "--name", "full").exit_code == 0
    assert saves == [100, 200, 300, 400]
    crashed = out / "crashed"
    shutil.copytree(out / "full", crashed)  # as if killed at step 260: metrics to 400 written, summary not
    (crashed / "summary.json").unlink()
    shutil.copy(tmp_path / "ckpt-200.pt", crashed / "checkpoint.pt")
    resumed = train(cli, "--resume", str(crashed))
    assert resumed.exit_code == 0, resumed.output
    assert rows(crashed) == rows(out / "full")


@pytest.mark.parametrize("damage,message", [
    (lambda p: (p / "checkpoint.pt").write_bytes(b"not a checkpoint"), "cannot read {p}/checkpoint.pt ("),
    (lambda p: (p / "checkpoint.pt").write_bytes((p / "checkpoint.pt").read_bytes()[:1000]),
     "cannot read {p}/checkpoint.pt ("),
    (lambda p: (p / "checkpoint.pt").unlink(), "{p} has no checkpoint.pt (it stopped before its first checkpoint)"),
    (lambda p: (p / "config.json").unlink(), "{p} is not a run directory (it has no config.json)"),
])
def test_a_damaged_or_missing_checkpoint_is_one_clear_line(cli, damage, message, tmp_path):
    out = tmp_path / "runs"
    short = [a if a != "700" else "50" for a in ARGS]
    assert train(cli, *short, "--out", str(out), "--name", "r").exit_code == 0
    path = out / "r"
    s = summary(path)
    write_json_atomic(path / "summary.json", {**s, "status": "interrupted"})
    damage(path)
    result = train(cli, "--resume", str(path))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(p=path)), lines


def test_resume_takes_no_other_settings(cli, tmp_path):
    result = train(cli, "--resume", str(tmp_path), "--lr", "0.1")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --resume continues a run as it was configured; drop --lr"


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    """A write killed half-way (simulated: the writer dies after some bytes) leaves the previous file whole."""
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"status": "interrupted", "steps": 5})

    def dies_mid_write(f):  # every atomic write (JSON, checkpoint, table) goes through atomic_write
        f.write(b'{"status": "comp')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_mid_write)
    assert json.loads(path.read_text()) == {"status": "interrupted", "steps": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no partial file left beside it

    checkpoint.save(tmp_path, {"step": 1})
    real_save = torch.save

    def save_dies(obj, f, *a, **k):
        f.write(b"\x80\x02partial")
        raise OSError("disk gone")

    monkeypatch.setattr(torch, "save", save_dies)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, {"step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoint.load(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT, "summary.json"]


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "grokrun", "train", *ARGS, "--out", str(out), "--name", "t"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "t" / "metrics.csv").is_file() and
                                          len((out / "t" / "metrics.csv").read_text().splitlines()) > 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert summary(out / "t")["status"] == "interrupted" and (out / "t" / "checkpoint.pt").is_file()
    assert os.path.getsize(out / "t" / "checkpoint.pt") > 0


def test_a_checkpoint_from_before_a_setting_existed_still_resumes(cli, tmp_path):
    """A run written by an older grokrun has neither the settings added since in its checkpoint nor in its
    config.json; both are read with those settings at their defaults, so it resumes (this broke once:
    --cuda-graph and the model section were compared as None against their defaults)."""
    run = tmp_path / "old"
    assert train(cli, *ARGS[:-5], "--max-steps", "30", "--checkpoint-every", "10", "--out", tmp_path, "--name", "old",
                 "--quiet").exit_code == 0
    state = torch.load(run / CHECKPOINT, weights_only=False)
    for key in ("cuda_graph", "model"):
        del state["settings"][key]
    atomic_write(run / CHECKPOINT, lambda f: torch.save(state, f))
    config = json.loads((run / "config.json").read_text())
    for key in ("cuda_graph", "model", "tensorboard"):
        del config[key]
    write_json_atomic(run / "config.json", config)
    (run / "summary.json").unlink()  # as if it had stopped without one
    result = train(cli, "--resume", run)
    assert result.exit_code == 0, result.output
    assert summary(run)["status"] == "completed"
    state["settings"]["optim"]["lr"] = 0.5  # a real difference is still named
    atomic_write(run / CHECKPOINT, lambda f: torch.save(state, f))
    (run / "summary.json").unlink()
    result = train(cli, "--resume", run)
    assert result.exit_code == 2 and "was written by a run with optim.lr = 0.5" in result.stderr


def test_a_stop_asked_for_during_the_last_step_leaves_the_run_completed(cli, tmp_path, monkeypatch):
    from grokrun.filters import EMAFilter

    calls = ctrl_c_at(monkeypatch, EMAFilter, 30)  # in the last step
    result = cli(["train", "--task", "modular", "--p", "11", "--filter", "ema", "--max-steps", "30", "--quiet",
                  "--out", tmp_path, "--name", "last"])
    assert calls["n"] == 30
    assert result.exit_code == 0, result.output
    s = json.loads((tmp_path / "last" / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 30
    again = cli(["train", "--resume", tmp_path / "last"])
    assert again.exit_code == 0 and "has already ended (completed after 30 steps)" in again.output


def test_a_resume_refuses_a_metrics_file_that_lost_rows(cli, tmp_path, monkeypatch):
    from grokrun.filters import EMAFilter

    ctrl_c_at(monkeypatch, EMAFilter, 11)
    result = cli(["train", "--task", "modular", "--p", "11", "--filter", "ema", "--max-steps", "30", "--eval-every",
                  "1", "--quiet", "--out", tmp_path, "--name", "cut"])
    assert result.exit_code == 130
    monkeypatch.undo()
    metrics = tmp_path / "cut" / "metrics.csv"
    lines = metrics.read_text().splitlines()
    assert len(lines) == 1 + 12  # steps 0-11
    metrics.write_text("\n".join(lines[:5]) + "\n")  # rows of steps 0-3 only
    resumed = cli(["train", "--resume", tmp_path / "cut"])
    assert resumed.exit_code == 2
    assert resumed.stderr.strip() == (f"error: {metrics} has lost rows: 4 of the 12 evaluations up to step 11 are "
                                      "there; resumed, its curve would have a gap (restore the file, or start the "
                                      "run again)")
    assert metrics.read_text().splitlines() == lines[:5]  # nothing changed


def test_seeds_of_a_stack_go_on_when_one_lost_its_checkpoint(cli, tmp_path, monkeypatch):
    from grokrun.filters import EMAFilter

    ctrl_c_at(monkeypatch, EMAFilter, 9)
    result = cli(["train", "--task", "modular", "--p", "11", "--filter", "ema", "--max-steps", "20", "--seeds", "0-2",
                  "--quiet", "--out", tmp_path, "--name", "stack"])
    assert result.exit_code == 130, result.output
    monkeypatch.undo()
    stack = tmp_path / "stack"
    (stack / "seed1" / "checkpoint.pt").unlink()
    resumed = cli(["train", "--resume", stack, "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert f"warning: {stack / 'seed1'} has no checkpoint.pt" in resumed.stderr
    assert [json.loads((stack / f"seed{s}" / "summary.json").read_text())["status"] for s in (0, 2)] == \
        ["completed", "completed"]
    assert json.loads((stack / "seed1" / "summary.json").read_text())["status"] == "interrupted"  # left as it was


SEEDS = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
         "--batch-size", "32", "--filter", "ema", "--eval-every", "4", "--max-steps", "40", "--checkpoint-every", "10",
         "--seeds", "0,1", "--no-batch", "--quiet"]  # seeds one after another, as imdb's, qm9's, muon's always are


def test_seeds_an_interrupt_left_unbegun_are_begun_by_the_folders_resume(cli, tmp_path, monkeypatch):
    """Ctrl-C in seed 0 leaves seed 1 without a run directory; the folder's train.json names every seed asked
    for, so `--resume` of the folder finishes seed 0 and trains seed 1: both as if never interrupted. (Before
    it, the resume finished seed 0, said nothing of seed 1 and exited 0.)"""
    from grokrun.filters import EMAFilter

    assert train(cli, *SEEDS, "--out", tmp_path, "--name", "whole").exit_code == 0
    ctrl_c_at(monkeypatch, EMAFilter, 23)
    cut = train(cli, *SEEDS, "--out", tmp_path, "--name", "cut")
    folder = tmp_path / "cut"
    assert cut.exit_code == 130, cut.output
    assert cut.stdout.strip().splitlines()[-1] == (f"checkpoints written; continue with: grokrun train --resume "
                                                   f"{folder}; seed1 not begun: the same --resume begins it")
    assert sorted(p.name for p in folder.iterdir()) == ["seed0", "train.json"]
    monkeypatch.undo()
    resumed = train(cli, "--resume", folder)
    assert resumed.exit_code == 0, resumed.output
    for seed in ("seed0", "seed1"):
        assert summary(folder / seed)["status"] == "completed"
        assert rows(folder / seed) == rows(tmp_path / "whole" / seed)
    # killed before its first run directory (the record all there is, the folder moved since), resumed through
    # a folder above it: every seed begun, one after another as asked
    killed = tmp_path / "elsewhere" / "killed"
    killed.mkdir(parents=True)
    shutil.copy(folder / "train.json", killed / "train.json")
    assert train(cli, "--resume", tmp_path / "elsewhere").exit_code == 0
    assert [rows(killed / s) for s in ("seed0", "seed1")] == [rows(tmp_path / "whole" / s) for s in ("seed0", "seed1")]


def test_a_folder_of_seeds_that_cannot_begin_leaves_nothing_behind(cli, tmp_path):
    """The record is written before the first seed begins, and taken back, with the folders it made, when none
    can (here: no MNIST files, download off)."""
    out = tmp_path / "new" / "deeper"
    result = cli(["train", "--task", "mnist", "--data-dir", tmp_path / "nothing", "--no-download", "--seeds", "0,1",
                  "--quiet", "--out", out])
    assert result.exit_code == 2 and "MNIST" in result.stderr, result.output
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "train.json").write_text("{")
    refused = cli(["train", "--resume", tmp_path / "damaged"])
    assert refused.exit_code == 2 and f"cannot read {tmp_path / 'damaged' / 'train.json'}" in refused.stderr

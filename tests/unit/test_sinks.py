"""The sinks beside a run's own files: Weights & Biases offline, read back from its files, and TensorBoard; a
sink that cannot start is refused before training, one that fails mid-run does not stop it."""

import csv
import json
import os
import signal
import struct
from importlib.util import find_spec
from pathlib import Path

import pytest

from grokrun.results import flatten

pytestmark = pytest.mark.skipif(find_spec("wandb") is None, reason="wandb is not installed")  # (found, not imported: 1 s a worker at collection)

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "2", "--max-steps", "16", "--quiet", "--wandb"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def records(path: Path):
    """The records of a W&B run file (LevelDB's log format: 32 KiB blocks of checksummed chunks, after a 7-byte
    ":W&B" header), as wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, pending = path.read_bytes(), 7, b""
    if data[:4] != b":W&B":  # (not yet written)
        return
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or kind == 0:  # the block's padding
            pos += left
            continue
        if pos + 7 + length > len(data):  # a chunk still being written
            return
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or a record's last chunk
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def key(item) -> str:
    return item.key or ".".join(item.nested_key)


def finished_files(run_dir: Path, expected: int, wait_s: float = 30.0) -> list[Path]:
    """The run directory's W&B run files, once ``expected`` of them hold their exit record: W&B's service writes
    them behind the process, so a file may still be filling just after ``finish()`` returns."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
        done = [f for f in files if any(r.WhichOneof("record_type") == "exit" for r in records(f))]
        if len(done) >= expected or time.monotonic() > deadline:
            return files
        time.sleep(0.2)


def wandb_runs(run_dir: Path, expected: int = 1) -> list[dict]:
    """Each W&B run file under the run directory, oldest first: its id, group, name, config, rows and summary."""
    out = []
    for file in finished_files(run_dir, expected):
        run = {"rows": [], "summary": {}, "config": {}}
        for r in records(file):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run.update(id=r.run.run_id, group=r.run.run_group, name=r.run.display_name, project=r.run.project)
                run["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "history":
                run["rows"].append({key(i): json.loads(i.value_json) for i in r.history.item})
            elif kind == "summary":
                run["summary"].update({key(i): json.loads(i.value_json) for i in r.summary.update})
        out.append(run)
    return out


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def same_rows(logged: list[dict], run_dir: Path, drop: tuple[str, ...] = ()) -> None:
    """W&B's rows are metrics.csv's: the same steps, and at each the same values of every column (but ``drop``)."""
    rows = metrics(run_dir)
    assert [r["_step"] for r in logged] == [r["step"] for r in rows]
    for got, want in zip(logged, rows):
        assert {k: v for k, v in got.items() if not k.startswith("_") and k not in drop} == \
            pytest.approx({k: v for k, v in want.items() if k != "step" and k not in drop}, rel=1e-12)


def test_an_offline_run_holds_the_rows_config_and_summary_of_the_run_directory(cli, tmp_path):
    result = cli(["train", *TINY, "--out", tmp_path, "--name", "r", "--wandb-project", "mine"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "r"
    [run] = wandb_runs(run_dir)
    assert (run["name"], run["project"], run["group"]) == ("r", "mine", "")
    assert json.loads((run_dir / "wandb.json").read_text())["id"] == run["id"]
    same_rows(run["rows"], run_dir)
    summary = flatten(json.loads((run_dir / "summary.json").read_text()))
    assert {k: run["summary"][k] for k in summary} == summary
    config = json.loads((run_dir / "config.json").read_text())
    assert {k: run["config"][k] for k in config} == config


def test_stacked_seeds_log_as_separate_runs_and_a_comparison_groups_them(cli, tmp_path):
    result = cli(["compare", *TINY, "--filter", "ema", "--seeds", "0,1", "--out", tmp_path / "c"])
    assert result.exit_code == 0, result.output
    ids = set()
    for run_dir in sorted(p for p in (tmp_path / "c").iterdir() if p.is_dir()):
        [run] = wandb_runs(run_dir)
        assert run["group"] == "c" and run["name"] == run_dir.name and run["config"]["seed"] == int(run_dir.name[-1])
        same_rows(run["rows"], run_dir)
        ids.add(run["id"])
    assert len(ids) == 4


def test_a_sweeps_runs_share_its_folders_group_with_their_swept_values_in_their_config(cli, tmp_path):
    result = cli(["sweep", *TINY, "--max-steps", "4", "--lr", "1e-3,2e-3", "--out", tmp_path / "s"])
    assert result.exit_code == 0, result.output
    runs = [wandb_runs(d)[0] for d in sorted(p for p in (tmp_path / "s").iterdir() if p.is_dir())]
    assert [(r["group"], r["config"]["optim"]["lr"]) for r in runs] == [("s", 1e-3), ("s", 2e-3)]


def test_a_resumed_run_continues_its_wandb_run_without_logging_a_step_twice(cli, tmp_path, monkeypatch):
    from grokrun.filters import GradFilter

    calls, original = {"n": 0}, GradFilter.apply

    def apply(self, *args, **kwargs):  # Ctrl-C twice at step 13: stopped at once, the checkpoint is step 8's
        calls["n"] += 1
        if calls["n"] == 13:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GradFilter, "apply", apply)
    first = cli(["train", *TINY, "--checkpoint-every", "8", "--out", tmp_path, "--name", "r"])
    assert first.exit_code != 0 and not (tmp_path / "r" / "summary.json").exists()
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "r"
    before = [r["step"] for r in metrics(run_dir)]
    assert before[-1] > 8  # rows after the checkpoint were logged, to the CSV and to W&B
    again = cli(["train", "--resume", run_dir])
    assert again.exit_code == 0, again.output
    runs = wandb_runs(run_dir, expected=2)
    assert len(runs) == 2 and runs[0]["id"] == runs[1]["id"]  # the same W&B run, continued
    assert [r["_step"] for r in runs[0]["rows"]] == before
    # each step once, with the numbers metrics.csv has now (the rows past the checkpoint were evaluated again to
    # the same numbers; only their clock differs, W&B keeping the first life's)
    same_rows(runs[0]["rows"] + runs[1]["rows"], run_dir, drop=("wall_s",))
    assert runs[1]["summary"]["status"] == "completed"


def test_a_sink_that_fails_mid_run_stops_itself_not_the_run(cli, tmp_path, monkeypatch):
    from grokrun import sinks

    original, calls = sinks.WandB.log, {"n": 0}

    def log(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("W&B went away")
        original(self, row)

    monkeypatch.setattr(sinks.WandB, "log", log)
    result = cli(["train", *TINY, "--out", tmp_path, "--name", "r"])
    assert result.exit_code == 0, result.output
    assert "warning: W&B stopped logging this run (ConnectionError: W&B went away); metrics.csv goes on" in result.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "completed"
    assert len(metrics(tmp_path / "r")) == 9  # steps 0, 2, ..., 16
    assert calls["n"] == 3  # the sink was not called again


@pytest.mark.parametrize("args, env, message", [
    (["--wandb-project", "a/b"], {}, "error: --wandb-project 'a/b' is not a W&B project name: 1 to 128 characters"),
    ([], {"WANDB_MODE": "online", "WANDB_API_KEY": "", "NETRC": "/nonexistent"},
     "error: --wandb needs a W&B login (wandb login, or WANDB_API_KEY) or WANDB_MODE=offline"),
    ([], {"find_spec": None}, "error: --wandb needs Weights & Biases: pip install 'grokrun[wandb]'"),
])
def test_a_sink_that_cannot_work_is_one_line_before_anything_is_written(cli, tmp_path, monkeypatch, args, env,
                                                                        message):
    import importlib.util

    from grokrun import sinks

    for key, value in env.items():
        if key == "find_spec":
            found = importlib.util.find_spec
            monkeypatch.setattr(sinks.importlib.util, "find_spec", lambda n: None if n == "wandb" else found(n))
        else:
            monkeypatch.setenv(key, value)
    result = cli(["train", *TINY, *args, "--out", tmp_path / "out"])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()

"""The run directory written (grokrun.results): whole files or none, rows in the contract's format, a resumed
writer that keeps the rows up to its checkpoint, and folders continued by the same command."""

import json

import pytest

from grokrun.results import CONFIG, METRICS, SUMMARY, RunWriter, atomic_write, read_metrics, reuse_or_new


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def fails(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fails)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def rows(n):
    return [{"step": 10 * i, "wall_s": i / 10, "train_loss": 1.0 / (i + 1), "train_acc": None, "val_loss": 2.0,
             "val_acc": 0.1 * i} for i in range(n)]


def test_a_writer_writes_the_contract_and_a_resumed_one_keeps_rows_up_to_its_step(tmp_path):
    writer = RunWriter(tmp_path, {"task": "modular"})
    for row in rows(5):
        writer.log(row)
    writer.close()
    assert json.loads((tmp_path / CONFIG).read_text()) == {"task": "modular"}
    header = (tmp_path / METRICS).read_text().splitlines()[0]
    assert header.startswith("step,wall_s,train_loss,train_acc,val_loss,val_acc")
    back = read_metrics(tmp_path)
    assert [r["step"] for r in back] == [0, 10, 20, 30, 40] and back[2]["train_acc"] is None
    resumed = RunWriter.resume(tmp_path, upto=20)  # the checkpoint was at step 20: later rows come again
    assert [r["step"] for r in resumed.rows] == [0, 10, 20]
    resumed.log(rows(4)[3])
    resumed.finish({"status": "completed"})
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 10, 20, 30]
    assert json.loads((tmp_path / SUMMARY).read_text())["status"] == "completed"


def test_the_same_command_continues_the_newest_matching_folder(tmp_path):
    for name, mark in (("sweep-modular-20260101-000000", "a"), ("sweep-modular-20260102-000000", "b"),
                       ("sweep-modular-20260103-000000", "unreadable")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mark").write_text(mark)
    (tmp_path / "sweep-modular-20260103-000000" / "mark").unlink()
    found = reuse_or_new(tmp_path, "sweep-modular", lambda f: (f / "mark").read_text() in ("a", "b"))
    assert found == (tmp_path / "sweep-modular-20260102-000000", True)
    new, was_found = reuse_or_new(tmp_path, "sweep-modular", lambda f: False)
    assert not was_found and new.name.startswith("sweep-modular-") and not new.exists()

"""Sweeps that survive kills and neighbours: a kill -9'd parallel sweep leaves no worker training, and the same
command then finishes it with each point exactly once; a folder in use is refused; a folder that holds another
grid is refused, naming the difference. Real processes, as a user's shell runs them."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
         "--batch-size", "32", "--eval-every", "20", "--checkpoint-every", "5", "--quiet"]
GRID = ["--lr", "0.001,0.002,0.003,0.004", "--seeds", "0-1"]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def started_runs(out: Path) -> int:
    return sum(1 for p in out.glob("*/metrics.csv") if len(p.read_text().splitlines()) > 3)


def sweep_process(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grokrun", "sweep", *SMALL, *GRID, *extra, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_parallel_sweep_leaves_no_worker_and_the_same_command_finishes_it(cli, tmp_path):
    out = tmp_path / "swq"
    proc = sweep_process(out, "--max-steps", "200", "--jobs", "2", "--threads", "1")
    try:
        wait_for(lambda: started_runs(out) >= 1, 120, "the workers to train")
        workers = children(proc.pid)
        assert workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: not any(alive(p) for p in workers), 15, "the workers to end with their sweep")
    finally:
        if proc.poll() is None:
            proc.kill()
    result = cli(["sweep", *SMALL, *GRID, "--max-steps", "200", "--jobs", "2", "--threads", "1", "--out", out])
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == sorted(f"lr={lr}-seed{s}" for lr in ("0.001", "0.002", "0.003", "0.004") for s in (0, 1))
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and sorted(r["run_dir"] for r in rows) == runs  # each point exactly once
    for run in runs:
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 200


def test_a_folder_in_use_is_refused_and_a_foreign_grid_too(cli, tmp_path):
    out = tmp_path / "busy"
    first = sweep_process(out, "--max-steps", "1500")
    try:
        wait_for(lambda: started_runs(out) >= 1, 120, "the first sweep to train")
        second = cli(["sweep", *SMALL, *GRID, "--max-steps", "1500", "--out", out])
        assert second.exit_code == 2
        assert second.stderr.strip() == (f"error: {out} is in use by a sweep (process {first.pid}) still running; "
                                         "wait for it to end, or choose another --out")
        compare = cli(["compare", *SMALL, "--filter", "ema", "--max-steps", "10", "--out", out])
        assert compare.exit_code == 2 and f"is in use by a sweep (process {first.pid})" in compare.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert not (out / "compare.json").exists() and not list(out.glob("baseline-*"))  # the refused one wrote nothing
    foreign = cli(["sweep", *SMALL, "--weight-decay", "0,0.1", "--max-steps", "1500", "--out", out])
    assert foreign.exit_code == 2
    assert foreign.stderr.strip() == (f"error: {out} holds a sweep of another grid (swept lr = 0.001, 0.002, 0.003, "
                                      "0.004 there, weight-decay = 0.0, 0.1 here); choose another --out")
    from grokrun import sweep as sw

    stored = json.loads((out / "sweep.json").read_text())
    same_with_more_seeds = sw.Grid(stored["fixed"], [sw.Axis(a["key"], a["name"], a["values"]) for a in stored["axes"]],
                                   seeds=[0, 1, 2])
    sw.check_same_grid(out, same_with_more_seeds, "modular")  # more seeds of the same grid: welcome


@pytest.mark.slow
def test_ctrl_c_on_a_parallel_sweep_starts_no_other_point(tmp_path):
    """Ctrl-C reaches the whole process group, the sweep and its workers: the running points stop as
    interrupted and no queued point starts, even where the sweep itself hears the signal late (or, started
    from a script in the background, not at all: its workers still tell each other)."""
    out = tmp_path / "ctrl-c"
    proc = subprocess.Popen([sys.executable, "-m", "grokrun", "sweep", *SMALL, *GRID[:2], "--max-steps", "3000",
                             "--jobs", "2", "--threads", "1", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            # as a shell starts a background job: the sweep itself ignores Ctrl-C, its workers do not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: started_runs(out) >= 2, 120, "both workers to train")
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout + stderr
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in out.glob("*/summary.json")}
    assert statuses and set(statuses.values()) == {"interrupted"}, statuses
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2  # the two that were training, and no other


def test_a_sweep_into_a_folder_it_cannot_write_is_one_line(cli, tmp_path, monkeypatch):
    import builtins

    out = tmp_path / "read-only"
    out.mkdir()

    def refused(path, *args, **kwargs):  # (as a read-only folder answers; root writes anywhere, so pretend)
        if str(path).startswith(str(out)):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr("grokrun.results.open", refused, raising=False)
    result = cli(["sweep", *SMALL, "--lr", "0.001,0.002", "--max-steps", "2", "--out", out])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: cannot write into {out}: Permission denied; choose another --out"
    assert list(out.iterdir()) == []

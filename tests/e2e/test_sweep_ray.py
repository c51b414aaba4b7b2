"""The Ray backend of grokrun sweep, against a local Ray instance (CI installs the ray extra)."""

import csv
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import ray  # in the test extra: CI runs these
import torch

from conftest import sweep_table as table
from grokrun.settings import machine_threads

pytestmark = pytest.mark.xdist_group("ray")  # one worker runs every Ray test: one Ray instance at a time

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def ray_down():
    yield
    ray.shutdown()


def ran_on(folder):
    with open(folder / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def threads(folder):
    """The threads each run of a sweep was configured with (config.json) and ran with (summary.json)."""
    return ({json.loads((folder / run / "config.json").read_text())["threads"] for run in table(folder)},
            {json.loads((folder / run / "summary.json").read_text())["threads"] for run in table(folder)})


@pytest.mark.slow
def test_ray_gives_the_sweep_table_of_the_local_backend(cli, tmp_path):
    """Left at its default, a run's thread count is this machine's cores, fixed when the run is configured: the
    local sweep (launched here at one thread) and the Ray tasks (as many CPUs each) run it with the same count."""
    grid = [*TINY, "--max-steps", "12", "--train-frac", "0.5,0.8", "--filter", "none,ema", "--seeds", "0,1",
            "--threshold", "0.1"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the launcher's own count is not the runs'
    try:
        local = cli(["sweep", *grid, "--out", tmp_path / "local"])
    finally:
        torch.set_num_threads(before)
    assert local.exit_code == 0, local.output
    remote = cli(["sweep", *grid, "--backend", "ray", "--out", tmp_path / "ray"])
    assert remote.exit_code == 0, remote.output
    cores = machine_threads()
    assert f"4 Ray tasks on a local Ray instance: {cores} CPU each" in remote.stdout
    assert table(tmp_path / "ray") == table(tmp_path / "local")
    assert len(table(tmp_path / "ray")) == 8
    assert threads(tmp_path / "local") == threads(tmp_path / "ray") == ({cores}, {cores})
    # where each ran: this host, outside Ray or on the local instance's one node
    host, node = socket.gethostname(), ray.get_runtime_context().get_node_id()
    assert {r["ran_on"] for r in ran_on(tmp_path / "local")} == {f"{host}:local"}
    assert {r["ran_on"] for r in ran_on(tmp_path / "ray")} == {f"{host}:{node[:8]}"}
    assert f"(on {host}:{node[:8]})" in remote.stdout


@pytest.mark.slow
def test_with_threads_set_every_launcher_gives_the_same_sweep_table(cli, tmp_path):
    """--threads is the run's own: each launcher (this process, --jobs 2 workers, Ray tasks) runs it with that
    many, records it, and gives the same table (time columns aside). (On these small models 1 and 2 threads
    happened to give equal float32 numbers here; large reductions do not: the setting is what makes the
    equality hold in general.)"""
    grid = [*TINY, "--max-steps", "40", "--lr", "0.001,0.003", "--seeds", "0,1", "--threshold", "0.1", "--threads", "1"]
    local = cli(["sweep", *grid, "--out", tmp_path / "local"])
    jobs = cli(["sweep", *grid, "--jobs", "2", "--out", tmp_path / "jobs"])
    remote = cli(["sweep", *grid, "--backend", "ray", "--out", tmp_path / "ray"])
    assert local.exit_code == jobs.exit_code == remote.exit_code == 0
    assert "1 CPU each" in remote.stdout
    assert table(tmp_path / "local") == table(tmp_path / "jobs") == table(tmp_path / "ray")
    assert threads(tmp_path / "local") == threads(tmp_path / "jobs") == threads(tmp_path / "ray") == ({1}, {1})


def _worker_pids():
    """Processes of Ray workers running a grokrun task (Ray names them after the task's function)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray::_train_unit" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_killed_worker_loses_no_run(cli, tmp_path):
    """SIGKILL the worker once its run has a checkpoint: Ray runs the task again, which resumes from it, and the run
    ends with the metrics of a run never interrupted."""
    args = [*TINY, "--max-steps", "300", "--checkpoint-every", "20", "--train-frac", "0.5", "--seeds", "0"]
    out = tmp_path / "ray"
    run = out / "point-seed0"
    killed = []

    def kill_once_checkpointed():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = _worker_pids()
            if pids and (run / "checkpoint.pt").is_file():
                os.kill(pids[0], 9)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_once_checkpointed)
    killer.start()
    result = cli(["sweep", *args, "--backend", "ray", "--out", out])
    killer.join()
    assert killed, "the worker finished before it could be killed"
    assert result.exit_code == 0, result.output
    whole = cli(["sweep", *args, "--out", tmp_path / "local"])
    assert whole.exit_code == 0, whole.output
    assert table(out) == table(tmp_path / "local")
    assert table(out)["point-seed0"]["status"] == "completed"


@pytest.mark.parametrize("args, message", [
    (["--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
    (["--address", "nonsense"], "--address must be HOST:PORT"),
    (["--gpus-per-run", "1"], "--gpus-per-run 1: this machine has 0 GPUs in all, so no task could start"),
    (["--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
])
def test_a_ray_that_cannot_run_the_sweep_is_one_line_within_seconds_and_writes_nothing(cli, tmp_path, monkeypatch,
                                                                                      args, message):
    if args[0] == "--gpus-per-run" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    # As in a fresh process: Ray's first local instance in a process turns token authentication on and says so
    # (it then sets RAY_AUTH_MODE in this process's environment, which would hide that from later tests).
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    out = tmp_path / "ray"
    started = time.perf_counter()
    result = cli(["sweep", *TINY, "--lr", "0.001,0.002", "--max-steps", "4", "--backend", "ray", *args, "--out", out])
    assert time.perf_counter() - started < 30
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_sigterm_on_a_ray_sweep_is_the_interrupted_line(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "grokrun", "sweep", *TINY, "--lr", "0.001,0.002", "--max-steps",
                             "100000", "--checkpoint-every", "50", "--backend", "ray", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob("*/metrics.csv")):
            time.sleep(0.1)
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert f"interrupted: the same command continues the sweep in {out}" in stdout
    assert "Traceback" not in stderr and "Stack" not in stderr, stderr

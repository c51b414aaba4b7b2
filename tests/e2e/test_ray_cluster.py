"""A sweep on a real Ray cluster: a head and a second node on loopback, started as docs/sweep.md says (token
authentication on), the sweep launched as a user launches it (its own process); and what goes wrong on clusters.

Every process a node starts carries a marker in its environment, so the tests stop what they started, by process
id, whatever happened (never `ray stop`, which would stop every Ray on the machine)."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import sweep_table as table

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "20", "--threshold", "0.1", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def ray_dir(monkeypatch):
    """Ray's folder (its sessions, and the record `ray start` leaves of the cluster it started or joined) of this
    test's own, for the nodes it starts and the sweeps it runs: another Ray on the machine (a user's cluster, another
    suite) neither sees these clusters nor is seen by them. (Short: Ray's socket paths must fit in 107 bytes.)"""
    folder = Path(tempfile.mkdtemp(prefix="grokrun-ray-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def record(ray_dir: Path) -> Path:
    """Ray's record of the cluster `ray start` last started here (with RAY_TMPDIR, under it)."""
    return ray_dir / "ray" / "ray_current_cluster"


def ray_start(port: int, head: bool) -> list[str]:
    """The commands docs/ray-cluster.md gives for a cluster on loopback: its head, and each further node."""
    where = ["--head", "--port", str(port), "--include-dashboard", "false"] if head else ["--address",
                                                                                           f"127.0.0.1:{port}"]
    return ["ray", "start", *where, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked(mark: str) -> list[int]:
    """Process ids of the processes whose environment carries ``mark``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"GROKRUN_TEST_NODE={mark}".encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def with_children(pids: list[int]) -> set[int]:
    """``pids`` and their descendants (Ray's agents rename themselves over their environment: found by parent)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, grew = set(pids), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def kill(mark: str) -> None:
    for pid in with_children(marked(mark)):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def node_id(mark: str) -> str:
    """The Ray node id of the node whose processes carry ``mark`` (its raylet's --node_id)."""
    for pid in marked(mark):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/raylet"):
            return next(a for a in args if a.startswith(b"--node_id=")).split(b"=", 1)[1].decode()
    raise AssertionError(f"no raylet carries {mark}")


class Cluster:
    """``ray start`` a head and, with ``second()``, more nodes; ``env`` is what a machine joining it needs."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None):
        self.tag, self.port, self.marks = secrets.token_hex(4), free_port(), []
        self.address = f"127.0.0.1:{self.port}"
        token = tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        # the token reaches each node, and the machine that runs the sweep, as a file (docs/sweep.md)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), **(env or {})}
        self.env.pop("RAY_AUTH_TOKEN", None)
        self.env.pop("OMP_NUM_THREADS", None)  # the runs' threads are theirs (--threads 1)

    def start(self, head: bool, prefix: tuple[str, ...] = ()) -> str:
        mark = f"{self.tag}-{len(self.marks)}"
        self.marks.append(mark)
        env = {**self.env, "GROKRUN_TEST_NODE": mark}
        args = ray_start(self.port, head)
        done = subprocess.run([*prefix, str(Path(sys.executable).parent / "ray"), *args[1:]], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return mark

    def head(self) -> str:
        return self.start(head=True)

    def second(self, prefix: tuple[str, ...] = ()) -> str:
        mark = self.start(head=False, prefix=prefix)
        self.wait_for(len(self.marks))
        return mark

    def wait_for(self, nodes: int) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run([ray, "status", "--address", self.address], env=self.env, capture_output=True,
                                 text=True).stdout
            active = out.split("Active:", 1)[-1].split("Pending:", 1)[0]
            if active.count("node_") >= nodes:
                return
            time.sleep(0.5)
        raise AssertionError(f"the cluster did not reach {nodes} nodes: {out}")

    def stop(self) -> None:
        for mark in self.marks:
            kill(mark)


@pytest.fixture
def cluster(tmp_path):
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        made.stop()


def sweep(args, env, timeout=300) -> subprocess.CompletedProcess:
    """(From a folder of its own: Ray puts the driver's working folder first on its workers' path.)"""
    cwd = Path(env.get("TMPDIR", "/tmp"))
    return subprocess.run([sys.executable, "-m", "grokrun", "sweep", *TINY, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def summaries(folder):
    return {p.name: json.loads((p / "summary.json").read_text())
            for p in folder.iterdir() if (p / "summary.json").is_file()}


def test_a_sweep_on_two_nodes_survives_losing_one(cluster, cli, tmp_path):
    """Both nodes take runs; the second node's raylet and workers are killed while it trains its second run (it has a
    checkpoint); Ray runs that task again on the head, which resumes the run from its checkpoint: every run ends
    complete, and the table is the local backend's, number for number."""
    cluster.head()
    second = cluster.second()
    head_id, second_id = node_id(cluster.marks[0]), node_id(second)
    steps = 500  # (the kill needs a run under way between its first checkpoint and its last: seconds of it)
    grid = ["--lr", "0.001,0.002,0.003,0.004", "--seeds", "0", "--max-steps", steps, "--checkpoint-every", "50"]
    out = tmp_path / "cluster"
    killed = []

    def kill_in_its_second_run():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            ended = summaries(out) if out.is_dir() else {}
            if any(s["ran_on"][-1]["node"] == second_id for s in ended.values()):
                for run in out.iterdir():
                    if (run / "checkpoint.pt").is_file() and run.name not in ended:
                        try:
                            saved = torch.load(run / "checkpoint.pt", weights_only=False)
                        except Exception:  # (being written)
                            continue
                        if saved["ran_on"][-1]["node"] == second_id and saved["step"] < steps:
                            kill(second)
                            killed.append(run.name)
                            return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_in_its_second_run)
    killer.start()
    started = time.perf_counter()
    result = sweep([*grid, "--backend", "ray", "--address", cluster.address, "--out", out], cluster.env)
    took = time.perf_counter() - started
    killer.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert killed, "the second node never had a run under way after finishing one"
    assert "4 Ray tasks on the Ray cluster at " + cluster.address in result.stdout

    ran = summaries(out)
    assert {s["status"] for s in ran.values()} == {"completed"} and len(ran) == 4
    lost = ran[killed[0]]["ran_on"]
    host = socket.gethostname()
    assert [(p["host"], p["node"]) for p in lost] == [(host, second_id), (host, head_id)], lost
    assert lost[0]["from_step"] == 0 and 0 < lost[1]["from_step"] < steps and lost[1]["from_step"] % 50 == 0
    assert {s["ran_on"][0]["node"] for s in ran.values()} == {head_id, second_id}  # both nodes ran runs

    before = torch.get_num_threads()
    local = cli(["sweep", *TINY, *grid, "--out", tmp_path / "local"])
    torch.set_num_threads(before)
    assert local.exit_code == 0, local.output
    assert table(out) == table(tmp_path / "local")
    print(f"two-node cluster: {took:.1f} s for the sweep (one node killed mid-run)")


def test_auto_joins_the_running_cluster_and_a_missing_token_is_one_line(cluster, tmp_path):
    cluster.head()
    auto = sweep(["--lr", "0.001", "--max-steps", "10", "--backend", "ray", "--address", "auto",
                  "--out", tmp_path / "auto"], cluster.env)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    assert "1 Ray task on the Ray cluster at auto" in auto.stdout
    node = json.loads(next((tmp_path / "auto").glob("*/summary.json")).read_text())["ran_on"][0]["node"]
    assert node == node_id(cluster.marks[0])

    no_mode = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    no_token_here = {**cluster.env, "HOME": str(tmp_path / "home")}
    no_token_here.pop("RAY_AUTH_TOKEN_PATH")
    for env, message in [
        (no_mode, f"the Ray cluster at {cluster.address} asks for a token: export RAY_AUTH_MODE=token"),
        ({**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)},
         f"the Ray cluster at {cluster.address} refused this machine's token"),
        (no_token_here, "RAY_AUTH_MODE=token, but this machine has no Ray token"),
    ]:
        started = time.perf_counter()
        out = tmp_path / "refused"
        result = sweep(["--lr", "0.001", "--max-steps", "10", "--backend", "ray", "--address", cluster.address,
                        "--out", out], env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
        assert time.perf_counter() - started < 20 and not out.exists()


def test_a_node_that_cannot_see_the_folder_or_runs_another_grokrun_is_one_line(cluster, tmp_path):
    """A node in a mount namespace of its own (a tmpfs over the sweep's parent folder: another filesystem at the
    same path), and then a node whose grokrun says another version (a package shim ahead of it on its path)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m (a mount namespace) is not allowed here")
    shared = tmp_path / "shared"
    shared.mkdir()
    cluster.head()
    blind = cluster.second(prefix=("unshare", "-m", "sh", "-c", f"mount -t tmpfs none {shared} && exec \"$0\" \"$@\""))
    out = shared / "sweep"
    result = sweep(["--lr", "0.001", "--max-steps", "10", "--backend", "ray", "--address", cluster.address,
                    "--out", out], cluster.env, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"the Ray node {node_id(blind)[:8]} on {socket.gethostname()}" in lines[0]
    assert f"cannot see {shared}: the sweep folder must be on a filesystem every node shares" in lines[0]
    assert list(shared.iterdir()) == []  # nothing written, the probe removed

    # a cluster (of another port) whose node puts a grokrun of another version first on its path
    shim = tmp_path / "shim" / "grokrun"
    shim.mkdir(parents=True)
    import grokrun

    real = Path(grokrun.__file__).parent
    shim.joinpath("__init__.py").write_text(f"__path__.append({str(real)!r})\n__version__ = '0.0.other'\n")
    other = Cluster(tmp_path, env={"PYTHONPATH": str(shim.parent)})
    try:
        other.head()
        result = sweep(["--lr", "0.001", "--max-steps", "10", "--backend", "ray", "--address", other.address,
                        "--out", out], {**other.env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}, timeout=120)
    finally:
        other.stop()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"has grokrun 0.0.other, this machine {grokrun.__version__}: install the same version" in lines[0]
    assert list(shared.iterdir()) == []


def test_the_docs_give_the_commands_these_tests_run():
    page = (Path(__file__).resolve().parents[2] / "docs" / "ray-cluster.md").read_text()
    for head in (True, False):
        assert "    " + " ".join(ray_start(6379, head)) + "\n" in page
    assert "    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=" in page


def test_without_an_address_a_dead_clusters_record_is_ignored(tmp_path, ray_dir):
    """A cluster killed without `ray stop` leaves its record; a sweep without --address starts its own instance
    (and finishes), and --address auto says the recorded cluster has stopped, in one line."""
    port = free_port()
    record(ray_dir).parent.mkdir(parents=True)
    record(ray_dir).write_text(f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    local = sweep(["--lr", "0.001,0.002", "--max-steps", "10", "--backend", "ray", "--out", tmp_path / "own"],
                  env, timeout=120)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "2 Ray tasks on a local Ray instance" in local.stdout and time.perf_counter() - started < 60
    auto = sweep(["--lr", "0.001", "--max-steps", "10", "--backend", "ray", "--address", "auto",
                  "--out", tmp_path / "auto"], env, timeout=60)
    lines = auto.stderr.strip().splitlines()
    assert auto.returncode == 2 and len(lines) == 1, auto.stderr
    assert f"no Ray cluster answers at auto (recorded as the latest cluster here, at 127.0.0.1:{port}: it has " \
           "stopped)" in lines[0]
    assert not (tmp_path / "auto").exists()

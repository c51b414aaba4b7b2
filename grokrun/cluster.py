"""Joining Ray for a sweep, and checking, before anything is written, that it can run the sweep.

    connect(address, cpus, gpus, folder)   # UserError in one line, within seconds, or Ray is ready

Without an address, a Ray instance of the sweep's own ("local"), whatever cluster records remain on this machine.
With one (HOST:PORT, or ``auto`` for the cluster ``ray start`` last started here), each thing Ray would otherwise
report after minutes of its own log lines, or not at all, is checked in turn:

    nothing listens at the address           a socket, 3 s
    the cluster wants a token we lack        a GCS client (token authentication: on by default in Ray 2.60)
    another Ray or Python on the cluster     Ray's own version check, in ray.init
    too few CPUs or GPUs for one task        the cluster's resources
    a node that cannot see the sweep folder  a probe file each node must read, at the same path
    another grokrun or torch on a node       the probe reports its versions
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import socket
from importlib.metadata import version
from pathlib import Path
from typing import Any

from grokrun.errors import UserError

PROBE_TIMEOUT_S = 60  # for every node's probe to answer (a worker process starts on each)
TOKEN_HELP = ("the head's ~/.ray/auth_token copied to this machine's ~/.ray/auth_token (or its text in RAY_AUTH_TOKEN, "
              "or its path in RAY_AUTH_TOKEN_PATH)")


def ray_module():
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'grokrun[ray]' (or use --backend local)") from None
    return ray


def connect(address: str | None, cpus: float, gpus: float, folder: Path | None = None) -> None:
    """Start a local Ray instance, or join the cluster at ``address`` and check each of its nodes can see ``folder``
    and runs this grokrun and torch; check Ray can give each task ``cpus`` CPUs and ``gpus`` GPUs."""
    if cpus <= 0 or gpus < 0:
        raise UserError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got {cpus:g} and {gpus:g}")
    ray = ray_module()
    if address is not None:
        target = _resolve(address)
        _reachable(target, address)
        _authenticated(target)
    try:
        # "local": a Ray instance of the sweep's own, even where a cluster record of an earlier (dead) one remains
        with _quiet_stderr():
            ray.init(address=target if address is not None else "local", include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(_init_failed(address, str(e))) from None
    have = ray.cluster_resources()
    for name, asked in (("CPU", cpus), ("GPU", gpus)):
        if asked > have.get(name, 0):
            where = "this machine" if address is None else f"the Ray cluster at {address}"
            raise UserError(f"--{name.lower()}s-per-run {asked:g}: {where} has {have.get(name, 0):g} {name}s in all, "
                            f"so no task could start; ask for at most that")
    if address is not None and folder is not None:
        check_nodes(ray, folder, cpus, gpus)


def _resolve(address: str) -> str:
    """HOST:PORT of ``address``; for ``auto``, of the cluster ``ray start`` last recorded on this machine."""
    if address != "auto":
        return address
    # RAY_ADDRESS, else the record `ray start` leaves; not Ray's own fallback to any Ray process running here
    # (another sweep's private instance is no cluster to join)
    found = os.environ.get("RAY_ADDRESS") or None
    if not found:
        try:
            from ray._private.utils import read_ray_address

            found = read_ray_address()
        except (ImportError, OSError):
            found = None
    if not found:
        raise UserError("--address auto: no Ray cluster was started on this machine (`ray start --head`); give the "
                        "head's HOST:PORT, or leave out --address for a local one")
    return found


def _reachable(target: str, address: str) -> None:
    """UserError unless something listens at HOST:PORT (Ray would otherwise retry for minutes)."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address must be HOST:PORT (the head's `ray start --head --port`) or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as e:
        recorded = f" (recorded as the latest cluster here, at {target}: it has stopped)" if address == "auto" else ""
        raise UserError(f"no Ray cluster answers at {address}{recorded} ({e.strerror or e}); start its head with "
                        f"`ray start --head --port {port}`, or leave out --address for a local one") from None


def _has_token() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path or "~/.ray/auth_token").expanduser().is_file()


def _authenticated(target: str) -> None:
    """UserError if the cluster at ``target`` refuses this machine's token, or wants one it does not send; within a
    second (ray.init would retry for ~20 s, printing Ray's log lines, then blame the address)."""
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    if mode == "token" and not _has_token():  # (Ray's client would abort the process on this)
        raise UserError(f"RAY_AUTH_MODE=token, but this machine has no Ray token: give it {TOKEN_HELP}")
    try:
        from ray._raylet import GcsClient
    except ImportError:  # another Ray's internals: ray.init says what is wrong, in its own words
        return
    try:
        with _quiet_stderr():
            GcsClient(address=target)
    except Exception as e:  # noqa: BLE001 - only a refused token is ours to explain
        if "InvalidAuthToken" not in str(e) and type(e).__name__ != "AuthenticationError":
            return
        if mode != "token":
            raise UserError(f"the Ray cluster at {target} asks for a token: export RAY_AUTH_MODE=token, with "
                            f"{TOKEN_HELP}") from None
        raise UserError(f"the Ray cluster at {target} refused this machine's token: use the cluster's, "
                        f"{TOKEN_HELP}") from None


def _init_failed(address: str | None, message: str) -> str:
    text = " ".join(message.split())
    mismatch = re.search(r"Ray: (\S+) Python: (\S+) This process .*? Ray: (\S+) Python: (\S+)", text)
    if mismatch:
        ray_there, py_there, ray_here, py_here = mismatch.groups()
        return (f"the Ray cluster at {address} runs Ray {ray_there} on Python {py_there}, this machine Ray {ray_here} "
                f"on Python {py_here}: run the sweep from a Python {py_there} with `pip install 'ray=={ray_there}'`")
    where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
    return (f"cannot start {where}: {text[:160]}" if address is None else
            f"cannot join {where}: {text[:160]} (is its head running? `ray status --address {address}`)")


# --- what each node sees ----------------------------------------------------------------------------------


def look(probe: str, text: str) -> dict[str, Any]:
    """On a node (a Ray task): its host and node id, whether it reads ``text`` at ``probe``, its package versions."""
    import grokrun
    import ray

    try:
        seen = Path(probe).read_text() == text
    except OSError:
        seen = False
    return {"host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(), "seen": seen,
            "grokrun": grokrun.__version__, "torch": version("torch")}


def check_nodes(ray, folder: Path, cpus: float, gpus: float) -> None:
    """UserError unless every node that could take a run sees the sweep folder (the same filesystem at the same
    path: a probe file written beside it, read there, removed) and has this grokrun and torch."""
    import grokrun
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= cpus
             and n["Resources"].get("GPU", 0) >= gpus]
    parent = folder.resolve()
    while not parent.is_dir():
        parent = parent.parent
    text = secrets.token_hex(16)
    probe = parent / f".grokrun-probe-{text[:8]}"
    try:
        probe.write_text(text)
    except OSError as e:
        raise UserError(f"cannot write in {parent} ({e.strerror or e}): choose an --out this machine can "
                        "write") from None
    try:
        remote = ray.remote(num_cpus=0, max_retries=0)(look)
        refs = {n["NodeID"]: remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe), text) for n in nodes}
        names = {n["NodeID"]: n.get("NodeName") or n.get("NodeManagerAddress") for n in nodes}
        seen = {}
        for node, ref in refs.items():
            try:
                seen[node] = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.TaskUnschedulableError:  # a node that died, not yet marked so: it takes no runs
                continue
            except ray.exceptions.GetTimeoutError:
                raise UserError(f"the Ray node {node[:8]} at {names[node]} did not answer within {PROBE_TIMEOUT_S} s; "
                                "check that `ray status --address ...` shows it alive") from None
            except ray.exceptions.RayError as e:
                why = " ".join(str(e).split())[-160:]
                raise UserError(f"the Ray node {node[:8]} at {names[node]} cannot run grokrun ({why}); install grokrun "
                                f"{grokrun.__version__} there, as here") from None
    finally:
        probe.unlink(missing_ok=True)
    here = {"grokrun": grokrun.__version__, "torch": version("torch")}
    for node, got in seen.items():
        who = f"the Ray node {node[:8]} on {got['host']} ({names[node]})"
        if not got["seen"]:
            raise UserError(f"{who} cannot see {parent}: the sweep folder must be on a filesystem every node shares, "
                            "at the same path (--out)")
        for name, mine in here.items():
            if got[name] != mine:
                raise UserError(f"{who} has {name} {got[name]}, this machine {mine}: install the same version on every "
                                f"node (pip install '{name}=={mine}')")


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null meanwhile: Ray's C++ core logs there directly, past Python's logging; and
    sys.stderr, where it is not fd 2 (a notebook, a test's CliRunner): Ray's warnings with no handler of their
    own (a local instance with token authentication on by default says so) go there."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(io.StringIO()):
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

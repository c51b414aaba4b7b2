"""Shared fixtures: the command line as a user runs it, and run directories built by hand in the contract's
format, for tests of what reads them (table, plot)."""

import csv
import json
import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # (before torch is imported: it reads this once)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # a worker per core, a thread per worker; runs take it as default

import pytest
import typer.testing
from typer.testing import CliRunner

from grokrun import plugins
from grokrun.cli import app_for


def pytest_collection_modifyitems(items):
    """The slow tests first, so that the workers start them early and the suite ends with its short tests."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _no_plugins_left():
    """Each test starts and ends with grokrun's own registries (a plugin one test loads is gone after it)."""
    plugins.reset()
    yield
    plugins.reset()


def _command_once_per_app(get_command):
    """typer's CliRunner builds the click command from the app at each invoke (8 ms, thousands of times a suite);
    a process of grokrun builds it once. Built once per app here too (an app per set of plugins loaded)."""
    built: dict[int, tuple[typer.Typer, object]] = {}

    def cached(app):
        if built.get(id(app), (None,))[0] is not app:
            built.clear()  # (as grokrun.cli keeps one app: the one for the plugins loaded now)
            built[id(app)] = (app, get_command(app))
        return built[id(app)][1]

    return cached


typer.testing._get_command = _command_once_per_app(typer.testing._get_command)


@pytest.fixture
def cli():
    """``cli(["train", "--task", ...])``: grokrun's command line, run in this process as a user would type it.

    Returns click's Result (exit_code, stdout, stderr, output). An exception that escapes the CLI is a bug,
    never an answer, so it is raised here with its traceback and fails the test.
    """
    runner = CliRunner()

    def invoke(args, **kwargs):
        args = [str(a) for a in args]
        result = runner.invoke(app_for(args), args, **kwargs)  # as grokrun's main(): the plugins named load first
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke


def sweep_table(folder):
    """A sweep's sweep.csv by run, but for what differs by where and when a run trained (its times, its ran_on):
    what two launchers of the same grid must agree on."""
    with open(folder / "sweep.csv", newline="") as f:
        return {r["run_dir"]: {k: v for k, v in r.items() if not k.startswith("wall_s") and k != "ran_on"}
                for r in csv.DictReader(f)}


def write_run(path, *, seed=0, filter="none", task="modular", val_acc=None, val_loss=None, steps=None,
              status="completed", wall_per_step=0.01, ms_per_step=10.0, peak=100.0, summary=True, settings=None,
              weight_norm=None):
    """A run evaluated at steps 0, 100, 200, ...: ``val_acc``/``val_loss`` list one value per evaluation.

    Training accuracy is 1.0 after step 0 and train loss a tenth of val loss. ``steps`` defaults to the last
    evaluated step; ``summary=False`` leaves the run without summary.json (crashed or still running).
    ``weight_norm`` (one value per evaluation) adds that column, as runs since the MNIST task have it.
    """
    n = len(val_acc if val_acc is not None else val_loss)
    val_loss = val_loss if val_loss is not None else [1.0 - 0.9 * a for a in val_acc]
    rows = []
    for i in range(n):
        step = 100 * i
        rows.append({"step": step, "wall_s": step * wall_per_step, "train_loss": val_loss[i] / 10,
                     "train_acc": None if val_acc is None else (0.0 if i == 0 else 1.0),
                     "val_loss": val_loss[i], "val_acc": None if val_acc is None else val_acc[i]})
    path.mkdir(parents=True)
    config = {"task": task, "seed": seed, "out": str(path.parent), "name": path.name,
              "filter": {"name": filter, "alpha": 0.98, "lamb": 2.0, "window_size": 100, "filter_type": "mean",
                         "warmup": True, "start": 0},
              "optim": {"name": "adam", "weight_decay": 0.005 if filter != "none" else 0.0},
              "train": {"max_steps": 100 * (n - 1)}, task: {"op": "mul", "p": 97, "train_frac": 0.5}}
    for key, value in (settings or {}).items():
        section, name = key.split(".")
        config[section][name] = value
    (path / "config.json").write_text(json.dumps(config))
    columns = ["step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc"]
    if weight_norm is not None:
        columns.append("weight_norm")
        for r, norm in zip(rows, weight_norm):
            r["weight_norm"] = norm
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r[k] is None else r[k] for k in columns])
    if summary:
        last = steps if steps is not None else rows[-1]["step"]
        (path / "summary.json").write_text(json.dumps({
            "status": status, "task": task, "filter": filter, "seed": seed, "steps": last,
            "max_steps": 100 * (n - 1), "wall_s": last * wall_per_step, "ms_per_step": ms_per_step,
            "peak_memory_mb": peak}))
    return path


@pytest.fixture
def make_run():
    return write_run


def metric_rows(run_dir, drop=("wall_s",)) -> list[dict[str, str]]:
    """A run's metrics.csv as rows of text cells, without the columns ``drop`` (the wall-clock: the one that must
    differ between runs that are otherwise the same)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def ctrl_c_at(monkeypatch, cls, call: int, method: str = "_filter") -> dict:
    """Press Ctrl-C (SIGINT to this process, as the terminal would) during the ``call``-th call of ``cls.method``
    (by default a filter's ``_filter``: once a training step). Returns the counter of calls."""
    import os
    import signal

    calls, original = {"n": 0}, getattr(cls, method)

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counted)
    return calls

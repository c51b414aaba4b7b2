"""Training a sweep's runs as Ray tasks, on this machine or a Ray cluster (``pip install 'grokrun[ray]'``).

    connect(address, cpus, gpus, folder)   # grokrun.cluster: joined and checked, before anything is written
    finished = run_on_ray(jobs, address=None, cpus=1, gpus=0, batch=True, report=...)

Each group of runs trained together (a point's seeds; grokrun.engine.group_runs) is one Ray task with its
share of CPUs and GPUs (``gpus=0.25`` packs four on a GPU). The task writes its run directories itself, so
the sweep folder must be at the same path on every machine (a shared filesystem, as on most clusters). A task
whose worker is lost is retried by Ray, and the retry resumes each run from its checkpoint (or starts it
again if it had none yet): a lost worker costs at most the steps since the last checkpoint. Ray is imported
only here, only when asked for.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from grokrun.cluster import ray_module
from grokrun.errors import UserError

RETRIES = 3  # times a task whose worker died is run again


def _train_unit(runs: list[tuple[dict, str]]) -> list[tuple[str, dict]]:
    """In a Ray worker: train (or resume, after a lost worker) runs together; (run dir, summary) of each. Each run
    comes as its config.json's contents, resolved here (which loads the plugins it names)."""
    import ray

    from grokrun import checkpoint
    from grokrun.config import resolve
    from grokrun.engine import train_seeds
    from grokrun.results import CHECKPOINT, CONFIG, FINAL
    from grokrun.runs import read_run

    todo, done = [], []
    for saved, path in runs:
        cfg, path = resolve(saved, {}), Path(path)
        try:
            summary = (read_run(path).summary or {}) if (path / CONFIG).is_file() else {}
        except (OSError, ValueError):  # lost before its metrics were written: start it again
            summary = {}
        if summary.get("status") in FINAL:
            done.append((str(path), summary))  # finished before this worker (a retry after its summary was written)
        else:
            if path.exists() and not (path / CHECKPOINT).is_file():
                shutil.rmtree(path)  # started, no checkpoint yet: start again
            todo.append((cfg, path if (path / CHECKPOINT).is_file() else None))
    node = ray.get_runtime_context().get_node_id()  # recorded in each summary's ran_on
    steps = {checkpoint.step_of(r) for _, r in todo if r is not None}
    if todo and (len(steps) > 1 or (steps and any(r is None for _, r in todo))):
        # seeds left at different points (one had checkpointed, another not): each continues on its own
        results = [pair for cfg, r in todo
                   for pair in train_seeds([cfg], quiet=True, resume=None if r is None else [r], node=node)]
    elif todo:
        resumes = [r for _, r in todo]
        results = train_seeds([c for c, _ in todo], quiet=True, resume=None if resumes[0] is None else resumes,
                              node=node)
    else:
        results = []
    return done + [(str(p), s) for p, s in results]


def run_on_ray(jobs: list, address: str | None, cpus: float, gpus: float, batch: bool, console,
               report: Callable[[Any, dict], None]) -> bool:
    """Train every job not reused as Ray tasks (on the Ray ``connect`` joined), reporting each run as its task
    ends. Returns False if the user interrupted (running tasks are cancelled; the same command resumes them
    from their checkpoints)."""
    from rich.markup import escape

    from grokrun.config import to_dict
    from grokrun.engine import group_runs

    ray = ray_module()
    todo = [j for j in jobs if j.action != "reuse"]
    if not todo:
        return True
    by_path = {j.path: j for j in todo}
    # grouped as new runs: a worker decides, when it starts, what to resume (a retry finds checkpoints)
    units = group_runs([(j.config, None) for j in todo], batch, note=lambda text: console.print(escape(text)))
    where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
    console.print(escape(f"{len(units)} Ray task{'s' * (len(units) != 1)} on {where}: {cpus:g} CPU"
                         f"{f' and {gpus:g} GPU' if gpus else ''} each"))
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES)(_train_unit)
    # (each run trains with its own --threads: grokrun.engine.runner.train_seeds)
    pending = {remote.remote([(to_dict(cfg), str(Path(cfg.out) / cfg.name)) for cfg, _ in unit]): unit
               for unit in units}
    import signal

    def stop(signum, frame):  # SIGTERM as Ctrl-C: the sweep's own "interrupted" line, not Ray's stack dumps
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as e:  # failed RETRIES + 1 times, or by an error of its own
                    why = " ".join(str(e).split())[-200:]
                    raise UserError(f"a Ray task failed ({type(e).__name__}: ...{why}); the same command "
                                    "resumes its runs") from None
                for path, summary in results:
                    report(by_path[Path(path)], summary)
        return True
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Variants x seeds -> runs -> one table and an overlay plot, in one output folder.

    grokrun compare --task modular --filter ema --seeds 0,1,2

The folder holds one run directory per (variant, seed), named ``<variant>-seed<N>``, and ``compare.json``
(the variants' settings). A run already complete there is reused and an interrupted one resumed from its
checkpoint, so a stopped comparison continues where it was. Training happens in the engine, in this process or in
worker processes (``jobs``); the table is read back from the run directories, as for any other runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from grokrun.config import PRESETS, ConfigError, RunConfig, resolve, to_dict
from grokrun.results import FINAL, differences, is_run_dir, read_run, variant_settings, write_json_atomic

_RUN_FILES = {"config.json", "metrics.csv", "summary.json", "checkpoint.pt", ".config.json.tmp",
              ".summary.json.tmp", ".checkpoint.pt.tmp", ".metrics.csv.tmp"}


@dataclass
class Variant:
    name: str
    config: RunConfig  # seed, out and name are set per run


def variants_from_filters(task: str | None, filters: list[str], overrides: dict[str, Any]) -> list[Variant]:
    """The baseline first, then each filter with the task's published settings; overrides apply to all."""
    task = task or RunConfig.task
    resolve(None, {**overrides, "task": task})  # validates the task and overrides before anything else
    names = ["none", *[f for f in filters if f != "none"]] if filters else list(PRESETS[task])
    variants = []
    for filt in dict.fromkeys(names):
        cfg = resolve(None, {**overrides, "task": task, "filter.name": filt})
        variants.append(Variant("baseline" if filt == "none" else filt, cfg))
    return variants


def variants_from_files(files: list[Path], overrides: dict[str, Any]) -> list[Variant]:
    """One variant per config file, named after it; the first is the baseline."""
    variants: list[Variant] = []
    for path in files:
        cfg = resolve(path, overrides)
        stem = path.parent.name if path.name == "config.json" else path.stem
        name, i = stem, 2
        while any(v.name == name for v in variants):
            name, i = f"{stem}-{i}", i + 1
        variants.append(Variant(name, cfg))
    tasks = {v.config.task for v in variants}
    if len(tasks) > 1:
        raise ConfigError(f"the config files are for different tasks ({', '.join(sorted(tasks))}); "
                          "compare variants of one task")
    return variants


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds must be comma-separated integers such as 0,1,2, got {text!r}")
    return list(dict.fromkeys(seeds))


def _manifest(variants: list[Variant]) -> list[dict[str, Any]]:
    return [{"name": v.name, "settings": variant_settings(to_dict(v.config))} for v in variants]


def output_folder(out: Path | None, variants: list[Variant], root: Path = Path("results")) -> tuple[Path, bool]:
    """The folder to compare in, and whether it was found rather than given or new.

    Without ``--out``, the newest ``results/compare-<task>-*`` folder holding the same variants is
    continued, so running the same command again reuses its runs; otherwise a new folder is named by the time.
    """
    if out is not None:
        return out, False
    task = variants[0].config.task
    manifest = _manifest(variants)
    for folder in sorted(root.glob(f"compare-{task}-*"), reverse=True):
        try:
            stored = json.loads((folder / "compare.json").read_text())["variants"]
            # completed with today's defaults, so settings added since a folder was made still match
            stored = [{"name": v["name"], "settings": variant_settings(to_dict(resolve(v["settings"], {})))}
                      for v in stored]
        except (OSError, ValueError, KeyError, TypeError):  # ConfigError is a ValueError
            continue
        if stored == manifest:
            return folder, True
    base = root / f"compare-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, i = base, 2
    while folder.exists():  # another comparison started within the same second
        folder, i = base.with_name(f"{base.name}-{i}"), i + 1
    return folder, False


@dataclass
class Job:
    variant: str
    seed: int
    config: RunConfig
    path: Path
    action: str  # "reuse" | "train" | "resume" (from its checkpoint) | "restart" (unfinished, no checkpoint)


def plan(out: Path, variants: list[Variant], seeds: list[int]) -> list[Job]:
    """What to do for each (variant, seed). Raises ConfigError if the folder holds a different run."""
    jobs = []
    for v in variants:
        for seed in seeds:
            name = f"{v.name}-seed{seed}"
            cfg = dataclasses.replace(v.config, seed=seed, out=str(out), name=name)
            path = out / name
            jobs.append(Job(v.name, seed, cfg, path, _action(path, cfg)))
    return jobs


def _action(path: Path, cfg: RunConfig) -> str:
    if not path.exists():
        return "train"
    if not is_run_dir(path):
        if {p.name for p in path.iterdir()} <= _RUN_FILES:
            return "restart"  # created, but stopped before its files were written
        raise ConfigError(f"{path} exists and is not a run directory; move it away or choose another --out")
    try:
        stored = to_dict(resolve(path / "config.json", {}))
    except ConfigError as e:
        raise ConfigError(f"{path} holds a run this comparison cannot read ({e}); choose another --out") from None
    diff = differences(variant_settings(stored), variant_settings(to_dict(cfg)))
    if stored["seed"] != cfg.seed:
        diff["seed"] = (stored["seed"], cfg.seed)
    if diff:
        key, (was, now) = next(iter(diff.items()))
        more = f" (and {len(diff) - 1} more settings)" if len(diff) > 1 else ""
        raise ConfigError(f"{path} was trained with {key} = {was!r}, this comparison asks for {now!r}{more}; "
                          "choose another --out")
    try:
        status = read_run(path).summary
    except (OSError, ValueError):
        status = None
    if status and status.get("status") in FINAL:
        return "reuse"
    return "resume" if (path / "checkpoint.pt").is_file() else "restart"


def write_manifest(out: Path, variants: list[Variant], seeds: list[int]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "compare.json"
    try:
        known = json.loads(path.read_text()).get("seeds", [])
    except (OSError, ValueError, AttributeError):
        known = []
    write_json_atomic(path, {"task": variants[0].config.task, "variants": _manifest(variants),
                             "seeds": list(dict.fromkeys([*known, *seeds]))})


# --- running ------------------------------------------------------------------------------------------

def run_jobs(jobs: list[Job], n_jobs: int, quiet: bool, console, report: Callable[[Job, dict], None]) -> bool:
    """Train every job not reused. Returns False if the user interrupted (the rest are left untrained)."""
    todo = [j for j in jobs if j.action != "reuse"]
    for job in todo:
        if job.action == "restart":
            shutil.rmtree(job.path)
    if n_jobs <= 1 or len(todo) <= 1:
        from grokrun.engine import train

        for job in todo:
            resume = job.path if job.action == "resume" else None
            _, summary = train(job.config, quiet=quiet, console=console, resume=resume)
            report(job, summary)
            if summary["status"] == "interrupted":
                return False
        return True
    return _run_parallel(todo, n_jobs, report)


def _run_parallel(todo: list[Job], n_jobs: int, report) -> bool:
    threads = max(1, (os.cpu_count() or 1) // n_jobs)  # no oversubscription: each worker gets its share
    ctx = get_context("spawn")
    stop = ctx.Event()  # set on Ctrl-C: jobs already handed to a worker then start no training
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_worker_init,
                               initargs=(threads, stop))
    pending: dict[Future, Job] = {pool.submit(_worker_train, j.config, j.path if j.action == "resume" else None): j
                                  for j in todo}

    def collect(futures) -> None:
        for future in futures:
            job = pending.pop(future)
            summary = future.result()
            if summary is not None:
                report(job, summary)
                if summary["status"] == "interrupted":
                    stop.set()

    try:
        while pending and not stop.is_set():
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
    except KeyboardInterrupt:
        stop.set()
    finally:
        # Ctrl-C reaches the workers too: the engine ends each running run as "interrupted" and writes it.
        pool.shutdown(wait=True, cancel_futures=True)
    collect([f for f in pending if f.done() and not f.cancelled()])
    return not stop.is_set()


_STOP = None


def _worker_init(threads: int, stop) -> None:
    import torch

    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle workers ignore Ctrl-C; a training one handles it
    torch.set_num_threads(threads)


def _worker_train(cfg: RunConfig, resume: Path | None) -> dict | None:
    """Train (or resume) one run in a worker; None if the comparison was stopped before it began."""
    from grokrun.engine import train

    if _STOP is not None and _STOP.is_set():
        return None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return train(cfg, quiet=True, resume=resume)[1]
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


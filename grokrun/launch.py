"""What ``grokrun train`` launches, and what it prints when they end: new runs (one, or one per seed in a
folder of its own) and the runs to resume at a path (a run directory, or a folder of them).

    runs = new_runs(cfg, seeds="0-15")            # configs, seed<N> each in one folder
    asked = record_asked(runs, batch=True)        # the folder's train.json: what --resume begins if unbegun
    forget_asked(asked)                           # (undone where no run began: a bad setting, an early Ctrl-C)
    todo, ended = resumable(Path("results/x"))    # (config, run directory) to continue; those already ended
    print_headline(console, run_dir, summary)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from grokrun.config import file_plugins, load_file, parse_seeds, resolve, to_dict
from grokrun.errors import UserError
from grokrun.results import CHECKPOINT, CONFIG, FINAL, SUMMARY, free_name, make_folder, write_json_atomic
from grokrun.runs import find_runs, read_run


def plugins_named(argv: list[str]) -> list[str]:
    """The plugin files a command line names: --plugin FILE (repeatable) and a --config file's plugins list."""
    found: list[str] = []
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("--plugin", "--config") and i + 1 < len(argv) else None
        if arg.startswith(("--plugin=", "--config=")):
            arg, _, value = arg.partition("=")
        if value is None:
            continue
        if arg == "--plugin":
            found.append(value)
        elif arg == "--config":
            try:
                listed = load_file(value).get("plugins", [])
            except UserError:
                continue  # resolve names the problem
            if isinstance(listed, list) and all(isinstance(p, str) for p in listed):
                found.extend(file_plugins(value, listed))
    return found


def is_run(path: Path) -> bool:
    """A run directory to resume (its metrics may be missing: resuming says so), rather than a folder of them."""
    return (path / CONFIG).is_file()


def new_runs(cfg, seeds: str | None) -> list:
    """The config of a new run, or one per seed with ``seeds`` (in one folder: out/<name or
    task-filter-seedsSPEC>, a run directory seed<N> each)."""
    from grokrun.engine.progress import format_seeds

    if seeds is None:
        return [cfg]
    seed_list = parse_seeds(seeds)
    folder = free_name(Path(cfg.out), cfg.name or f"{cfg.task}-{cfg.filter.name}-seeds{format_seeds(seed_list)}")
    return [dataclasses.replace(cfg, seed=s, out=str(folder), name=f"seed{s}") for s in seed_list]


ASKED = "train.json"  # in the folder of a `train --seeds`: the config of every run it was asked for


def record_asked(cfgs: list, batch: bool) -> tuple[Path, Path | None]:
    """Write the seeds' folder with its record of the runs asked for and whether they may train together
    (--no-batch), before any trains: where seeds train one after another, an interruption leaves the later ones
    unstarted, and ``--resume`` of the folder starts them from it, as they were asked to train. Returns (the
    folder, the outermost folder this created, or None), for ``forget_asked``."""
    folder = Path(cfgs[0].out)
    created = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    make_folder(folder)
    write_json_atomic(folder / ASKED, {"batch": batch, "runs": [to_dict(cfg) for cfg in cfgs]})
    return folder, created


def forget_asked(asked: tuple[Path, Path | None] | None) -> None:
    """Undo ``record_asked`` where no run directory was begun (a setting refused, an interrupt while the data
    loaded): nothing is left behind, the folders it made included."""
    if asked is None:
        return
    folder, created = asked
    if not folder.is_dir() or any(p.is_dir() for p in folder.iterdir()):
        return
    (folder / ASKED).unlink(missing_ok=True)
    for empty in [folder, *folder.parents] if created is not None else []:
        try:
            empty.rmdir()
        except OSError:  # (not empty: something else was put there meanwhile)
            break
        if empty == created:
            break


def _asked(folder: Path) -> dict[str, Any]:
    """The folder's record (``ASKED``), or {} where it has none."""
    try:
        asked = json.loads((folder / ASKED).read_text())
        runs = asked.get("runs")
        if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in runs) \
                or not isinstance(asked.get("batch", True), bool):
            raise ValueError("not a list of named runs")
        return asked
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"cannot read {folder / ASKED} ({e}); it lists the runs this folder was asked for: restore "
                        "it, or resume the run directories one at a time") from None


def _records(path: Path) -> list[Path]:
    """The folders of seeds at or below ``path`` that hold a record (``ASKED``); none for a run directory."""
    return [] if is_run(path) else sorted(record.parent for record in path.rglob(ASKED))


def _unbegun(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, saved config) of each run that a record at or below ``path`` names and that has no run directory
    there yet."""
    return [(folder, saved) for folder in _records(path) for saved in _asked(folder)["runs"]
            if not (folder / saved["name"]).exists()]


def unstarted(path: Path) -> list:
    """(config, None) of each run that a record at or below ``path`` names and that has no run directory yet."""
    return [(dataclasses.replace(resolve(saved, {}), out=str(folder)), None)  # (out: where the folder is now)
            for folder, saved in _unbegun(path)]


def batched(path: Path) -> bool:
    """Whether the runs at ``path`` may train together on --resume: not where a record there says --no-batch
    (one such folder among several: all of them one after another)."""
    return all(_asked(folder).get("batch", True) for folder in _records(path))


def resumable(path: Path, warn=lambda text: None) -> tuple[list, list]:
    """(config, run directory) of each run to resume at ``path`` (a run directory, or a folder of them), and
    (run directory, summary) of those that have already ended; in a folder of seeds, (config, None) of each
    seed it was asked for that never began (``record_asked``). Of a folder's runs, one without a checkpoint is
    left out (told to ``warn``) while the others go on; alone, it is the UserError that says so."""
    if path.is_file():
        raise UserError(f"--resume {path}: a file; give the run directory that holds it, or a folder of runs")
    if not path.is_dir():
        raise UserError(f"--resume {path}: no such folder")
    run_dirs = [path] if is_run(path) else find_runs(path)[0]
    never_begun = unstarted(path)
    if not run_dirs and not never_begun:
        raise UserError(f"{path} is not a run directory (it has no {CONFIG}) and holds none")
    todo, ended = [], []
    for run_dir in run_dirs:
        try:
            summary = json.loads((run_dir / SUMMARY).read_text())
        except (OSError, ValueError):
            summary = {}
        if summary.get("status") in FINAL:
            ended.append((run_dir, summary))
        else:
            todo.append((resolve(run_dir / CONFIG, {}), run_dir))
    without = [r for _, r in todo if not (r / CHECKPOINT).is_file()]
    if without and (len(without) < len(todo) or never_begun):  # the others go on; these have nothing to resume
        for run_dir in without:
            warn(f"{run_dir} has no {CHECKPOINT} (it stopped before its first one, or the file was removed), so "
                 f"it is not resumed; start it again with grokrun train --config {run_dir / CONFIG}")
        todo = [(c, r) for c, r in todo if r not in without]
    return todo + never_begun, ended


def nothing_to_resume(path: Path, ended: list) -> str:
    if len(ended) == 1:
        run_dir, summary = ended[0]
        return (f"{run_dir} has already ended ({summary['status'].replace('_', ' ')} after "
                f"{summary.get('steps', 0):,} steps); nothing to resume")
    return f"the {len(ended)} runs in {path} have all ended; nothing to resume"


def print_headlines(out, results: list[tuple[Path, dict[str, Any]]], folder: Path) -> None:
    """One line per seed trained at once, then what they cost together and how to continue any interrupted."""
    from grokrun.table_write import headline

    for run_dir, s in results:
        run = read_run(run_dir)
        threshold = run.config.get("train", {}).get("stop_at_acc") or 0.95
        out.print(escape(f"{run_dir}: {headline(run, threshold)}"))
    together = max((s.get("trained_with", 1) for _, s in results), default=1)
    if together > 1:
        wall = max(s["wall_s"] for _, s in results)
        out.print(escape(f"{together} seeds trained together: {wall:.1f} s of training for all of them"))
    if any(s["status"] == "interrupted" for _, s in results):
        waiting = [str((where / saved["name"]).relative_to(folder)) for where, saved in _unbegun(folder)]
        later = f"; {', '.join(waiting)} not begun: the same --resume begins {'them' if len(waiting) > 1 else 'it'}"
        out.print(escape(f"checkpoints written; continue with: grokrun train --resume {folder}"
                         + (later if waiting else "")))


def print_headline(out, run_dir: Path, s: dict[str, Any]) -> None:
    """Where the run went, how it ended, and what it found: steps and time to 95% val acc (or the lowest
    validation loss), ms/step, peak memory and device."""
    from grokrun.table import count
    from grokrun.table_write import headline

    run = read_run(run_dir)
    status = {"completed": "completed", "stopped_at_target": "stopped at target",
              "interrupted": "[yellow]interrupted[/yellow]", "diverged": "[red]diverged[/red]"}[s["status"]]
    out.print(f"run: {escape(str(run_dir))} ({status} after {count(s['steps'], 'step')})")
    if s["status"] == "diverged":
        out.print(f"[red]diverged at step {s['diverged_at']:,}[/red]: the loss or a gradient became non-finite; "
                  "try a smaller --lamb or --lr")
    if s["status"] == "interrupted":
        out.print(f"checkpoint written at step {s['steps']:,}; continue with: grokrun train --resume "
                  f"{escape(str(run_dir))}")
    threshold = run.config.get("train", {}).get("stop_at_acc") or 0.95  # the run's own target, where it has one
    out.print(escape(headline(run, threshold, status=False, machine=True)))


def refresh_sweep_outputs(out, folders: set[Path]) -> None:
    """After --resume: the sweep.csv, figures and report.html of each sweep folder whose runs were resumed, so
    that they tell the runs as they now are."""
    from grokrun.sweep_results import read_manifest, write_outputs

    for folder in sorted(folders):
        if read_manifest(folder) is not None:
            written = write_outputs(folder)
            out.print(escape(f"wrote {', '.join(str(p) for p in written)}"))

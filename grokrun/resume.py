"""Resume checks: a checkpoint continues only the run that wrote it, on the same data and settings.

    check_belongs(checkpoint.load(run_dir), cfg, task.fingerprint(), run_dir)   # UserError if not

A checkpoint stores the settings it was written with (``resumable_settings``: all but where the run directory
lies); an older checkpoint is completed with the settings added since, at their defaults, as its config.json is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grokrun.config import resolve, to_dict
from grokrun.errors import UserError
from grokrun.results import CHECKPOINT, CONFIG, METRICS, OUTPUT_SETTINGS, read_metrics
from grokrun.runs import differences, first_difference, without


def resumable_settings(cfg, seed: bool = True) -> dict[str, Any]:
    """What a checkpoint must agree with to resume: every setting but where the run directory lies (and,
    for runs trained together, but the seed)."""
    return without(to_dict(cfg), OUTPUT_SETTINGS + (() if seed else ("seed",)))


def check_belongs(saved: dict[str, Any], cfg, fingerprint: str, run_dir: Path) -> None:
    """UserError unless the checkpoint ``saved`` was written with the settings the run's config.json holds (a
    checkpoint from another run, or a config edited since, is refused) and on the same data."""
    if "settings" in saved:  # (checkpoints written before settings were stored have only the data's)
        diff = differences(completed(saved["settings"]), resumable_settings(cfg))
        if diff:  # name the most telling difference: the task or the filter before their settings
            key, was, now, more = first_difference(diff, prefer=("task", "filter.name", "optim.name"))
            raise UserError(f"{run_dir / CHECKPOINT} was written by a run with {key} = {was!r}, but {CONFIG} "
                            f"there says {now!r}{more}; a checkpoint resumes only the run that wrote it "
                            f"(restore {CONFIG}, or start a new run with --config)")
    if saved.get("fingerprint") != fingerprint:
        raise UserError(f"the data of {run_dir} differ from its checkpoint's (the dataset files changed?); "
                        "it cannot be resumed")


def completed(settings: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's settings with those added to grokrun since it was written at their defaults, as its
    config.json is read (resolve completes a saved config), so that an older checkpoint still resumes."""
    try:
        return resumable_settings(resolve(settings, {}))
    except UserError:  # settings today's checks refuse: compare them as they are, and name the difference
        return settings


def check_rows(run_dir: Path, saved: dict[str, Any], step: int) -> None:
    """UserError unless metrics.csv still holds every row written up to the checkpoint (nothing is changed)."""
    try:
        kept = sum(1 for r in read_metrics(run_dir) if r["step"] <= step)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {run_dir / METRICS} ({e}); the run cannot be resumed") from None
    if kept < saved.get("rows", 0):  # (checkpoints written before the count was kept: no check)
        raise UserError(f"{run_dir / METRICS} has lost rows: {kept} of the {saved['rows']} evaluations up to step "
                        f"{step:,} are there; resumed, its curve would have a gap (restore the file, or start the "
                        "run again)")

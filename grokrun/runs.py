"""Run directories read back: a run's config, metrics and summary, the runs under a folder, and how runs differ
(grokrun.results writes them). Nothing here imports torch or a task.

    runs, problems = load_runs(find_runs(Path("results"))[0])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re

from grokrun.results import CONFIG, METRICS, OUTPUT_SETTINGS, SUMMARY, flatten, read_metrics

_NOT_VARIANT = ("seed", *OUTPUT_SETTINGS)


_SEED_SUFFIX = re.compile(r"-seed-?\d+(-\d+)?$")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, float | None]]
    summary: dict[str, Any] | None  # None: the run never finished (crashed or still running)


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / METRICS).is_file()


def read_run(path: Path) -> Run:
    path = Path(path)
    config = json.loads((path / CONFIG).read_text())
    summary_path = path / SUMMARY
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return Run(path, config, read_metrics(path), summary)


def find_runs(path: Path) -> tuple[list[Path], list[Path]]:
    """Every run directory at or under ``path``, in sorted order, and the folders skipped as not runs.

    A run directory is not searched further. A folder that neither is a run nor holds one is skipped
    (and reported once, not each folder inside it); hidden folders are ignored.
    """
    path = Path(path)
    if is_run_dir(path):
        return [path], []
    runs: list[Path] = []
    skipped: list[Path] = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found, skipped_inside = find_runs(sub)
        if found:
            runs += found
            skipped += skipped_inside
        else:
            skipped.append(sub)
    return runs, skipped


def load_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every run at or under each path, read; and a warning naming each folder skipped as not a run or
    each run whose files cannot be read. What compare and plot both start from."""
    found: list[Path] = []
    warnings = []
    for path in paths:
        runs, skipped = find_runs(path)
        found += runs
        warnings += [f"skipping {p}: not a run directory (it has no {CONFIG} and {METRICS})" for p in skipped]
    runs = []
    for path in dict.fromkeys(found):
        try:
            runs.append(read_run(path))
        except (OSError, ValueError, UnicodeDecodeError) as e:  # json and csv errors are ValueErrors
            warnings.append(f"skipping {path}: cannot read it ({e})")
    return runs, warnings


def without(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A saved config (nested by section) less ``keys``, top-level or "section.key"."""
    out = dict(config)
    for key in keys:
        section, _, name = key.rpartition(".")
        if not section:
            out.pop(key, None)
        elif isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != name}
    return out


def variant_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without its seed and location: runs that share it are seeds of one variant."""
    return without(config, _NOT_VARIANT)


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings whose values differ between two configs: key -> (value in a, value in b)."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)}


def first_difference(diff: dict[str, tuple[Any, Any]], prefer: tuple[str, ...] = ()) -> tuple[str, Any, Any, str]:
    """The difference a message names (the first of ``prefer`` present, else the first), its two values, and
    " (and N more settings)" when there are others."""
    key = next((k for k in prefer if k in diff), next(iter(diff)))
    more = f" (and {len(diff) - 1} more settings)" if len(diff) > 1 else ""
    return key, *diff[key], more


def group_variants(runs: list[Run]) -> tuple[list[tuple[str, list[Run]]], list[str]]:
    """Runs grouped by variant (equal settings apart from seed), the baseline (filter none) first.

    A variant is named after its run directories without ``-seed<N>``; two variants with the same name
    get the settings that tell them apart. A second run of a seed is left out, with a warning.
    """
    groups: dict[str, list[Run]] = {}
    warnings = []
    for run in runs:
        key = json.dumps(variant_settings(run.config), sort_keys=True)
        group = groups.setdefault(key, [])
        twin = next((r for r in group if r.config.get("seed") == run.config.get("seed")), None)
        if twin is not None:
            warnings.append(f"skipping {run.path}: it repeats seed {run.config.get('seed')} of {twin.path}")
            continue
        group.append(run)
    ordered = sorted(groups.values(), key=lambda g: g[0].config.get("filter", {}).get("name") != "none")
    named: list[tuple[str, list[Run]]] = []
    for group in ordered:
        name = _SEED_SUFFIX.sub("", group[0].path.name) or group[0].path.name
        first = next((g for n, g in named if n.split(" [")[0] == name), None)
        if first is not None:
            diff = differences(variant_settings(first[0].config), variant_settings(group[0].config))
            name += " [" + ", ".join(f"{k}={v[1]}" for k, v in diff.items()) + "]"
        named.append((name, group))
    return named, warnings

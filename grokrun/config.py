"""Typed settings for one run, assembled from the registries: the shared sections are here, each task's
section is its module's Options (grokrun.tasks), and filters and optimizers are checked against theirs.

    cfg = resolve(config_file=None, overrides={"task": "modular", "filter.name": "ema"})

Resolution, later layers winning: defaults in code -> the task's DEFAULTS -> the filter's own defaults ->
either the task's published preset for that filter or, when a file is given, the file (TOML preset or a
run's config.json) -> flags. A file with a --filter other than its own keeps its other settings and takes
that filter's preset in place of its filter settings. A preset file holds only what differs from the
defaults. Importing this module does not import torch.

The classes are composed from the registries (``run_config_class()``): a section per task, and the filter
section from every filter's own Settings; they are composed again when a plugin registers an entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import field, fields
from pathlib import Path
from typing import Any

from grokrun import losses, noise, plugins, regularizers
from grokrun.errors import UserError, check_choice, shown
from grokrun.fields import base_type, field_docs, is_optional
from grokrun.filters import FILTERS
from grokrun.filters import check_name as check_filter
from grokrun.filters import defaults_of as filter_defaults
from grokrun.filters import parts as filter_parts
from grokrun.results import CONFIG, flatten
from grokrun.settings import (MAX_SEED, FilterBase, ModelConfig, OptimConfig, RunBase,  # noqa: F401 (shared names)
                              TrainConfig, machine_threads)
from grokrun.tasks import TASKS, task


_SHARED = ("filter", "optim", "train", "model")
_composed: dict[str, Any] = {"generation": None}


def _compose() -> dict[str, Any]:
    """The config classes for the registries as they are now (cached until a plugin registers an entry)."""
    if _composed["generation"] == plugins.generation:
        return _composed
    plugins.load_installed()
    settings: dict[str, tuple] = {}  # filter setting -> (type, default) of the first filter that has it
    for cls in FILTERS.values():
        for f in fields(cls.Settings):
            settings.setdefault(f.name, (f.type, f.default))
    filter_config = dataclasses.make_dataclass(
        "FilterConfig", [(n, t, field(default=d)) for n, (t, d) in settings.items()], bases=(FilterBase,),
        namespace={"__module__": __name__, "__doc__": "The filter section: the shared settings and every filter's."})
    names = tuple(TASKS)
    run_config = dataclasses.make_dataclass(
        "RunConfig", [(n, task(n).Options, field(default_factory=task(n).Options)) for n in names]
        + [("filter", filter_config, field(default_factory=filter_config))],
        bases=(RunBase,), namespace={"__module__": __name__, "__doc__": "A run: the shared settings and every task's section."})
    sections = {f.name: f.default_factory for f in fields(run_config) if f.default_factory is not dataclasses.MISSING}
    sections.pop("plugins")
    _composed.update(generation=plugins.generation, RunConfig=run_config, FilterConfig=filter_config,
                     SECTIONS=sections, TASK_SECTIONS=names)
    return _composed


def run_config_class() -> type:
    return _compose()["RunConfig"]


def sections() -> dict[str, type]:
    """Section name -> its dataclass: the shared sections and one per registered task."""
    return _compose()["SECTIONS"]


def task_sections() -> tuple[str, ...]:
    return _compose()["TASK_SECTIONS"]


def section_docs(section: str) -> dict[str, str]:
    """The help of each field of a section; the filter section's from each filter's own Settings."""
    if section != "filter":
        return field_docs(sections()[section])
    docs = field_docs(FilterBase)
    for cls in FILTERS.values():
        for name, doc in field_docs(cls.Settings).items():
            docs.setdefault(name, doc)
    return docs


def filter_owners(setting: str) -> list[str]:
    """The filters that have a setting (lamb: ema, ma)."""
    return [n for n, cls in FILTERS.items() if setting in {f.name for f in fields(cls.Settings)}]


def __getattr__(name: str):
    if name in ("RunConfig", "FilterConfig", "SECTIONS", "TASK_SECTIONS"):  # as composed now
        return _compose()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MAX_SEEDS_AT_ONCE = 10_000


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; "0-3,8" -> [0, 1, 2, 3, 8]; each seed in [0, MAX_SEED], repeats dropped."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            if hi.startswith("-") or lo.startswith(("+", " ")) or hi.startswith("+"):
                raise ValueError(part)  # (int() would read "1--2" as 1 to -2)
            first, last = int(lo), int(hi) if sep else int(lo)
            for seed in (first, last):
                if not 0 <= seed <= MAX_SEED:
                    raise UserError(f"--seeds: each seed must be in [0, {MAX_SEED:,}], got {seed}")
            if last < first:
                raise UserError(f"--seeds: a range runs upwards (such as 0-15), got {part!r}")
            if last - first + len(seeds) >= MAX_SEEDS_AT_ONCE:
                raise UserError(f"--seeds: at most {MAX_SEEDS_AT_ONCE:,} seeds at once, got {text!r}")
            seeds.extend(range(first, last + 1))
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        seeds = []
    if not seeds:
        raise UserError(f"--seeds must be seeds or ranges such as 0,1,2 or 0-15, got {text!r}")
    return list(dict.fromkeys(seeds))


# --- resolution ------------------------------------------------------------------------------------

def resolve(config_file: str | Path | dict | None, overrides: dict[str, Any]):
    """Build the run config from defaults, task defaults, preset or file, and flag overrides.

    ``config_file`` may also be a file's contents, already read (a saved config, completed with the
    settings added since). ``overrides`` maps config keys ("task", "filter.name", "optim.lr", "*.p") to
    values given on the command line; "*.x" means option x of the chosen task. Raises UserError on
    anything invalid.
    """
    if isinstance(config_file, dict):
        file_values = flatten(config_file)
    else:
        file_values = flatten(load_file(config_file)) if config_file else {}
    listed = file_values.get("plugins", [])
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise UserError(f"plugins must be a list of plugin files, got {listed!r}")
    if isinstance(config_file, (str, Path)):
        listed = file_plugins(config_file, listed)
    overrides = dict(overrides)
    file_values["plugins"] = plugins.load(list(dict.fromkeys([*listed, *overrides.pop("plugins", [])])))
    name = overrides.get("task", file_values.get("task", RunBase.task))
    filt = overrides.get("filter.name", file_values.get("filter.name", FilterBase.name))
    check_choice("task", name, TASKS)
    check_filter(filt)
    module = task(name)
    layers: list[dict[str, Any]] = [module.DEFAULTS, {f"filter.{k}": v for k, v in filter_defaults(filt).items()}]
    if config_file is None:  # (an empty dict is a file's contents: no preset)
        layers.append(_presets(module, filt))
    elif filt != file_values.get("filter.name", FilterBase.name):
        # --filter names another filter than the file's: the file's filter settings were for that one, so the
        # asked filter comes with its preset (or its own defaults), as --filter does without a file
        layers.append({k: v for k, v in file_values.items() if not k.startswith("filter.")})
        layers.append(_presets(module, filt))
        file_values = {}
    layers.append(file_values)
    layers.append({_task_key(k, name): v for k, v in overrides.items()})
    cfg = run_config_class()()
    for layer in layers:
        for key, value in layer.items():
            _set(cfg, key, value, name)
    if isinstance(cfg.filter.name, str):  # " ema" and "orthograd, ema" name the filters without their spaces
        cfg.filter.name = ",".join(filter_parts(cfg.filter.name))
    validate(cfg)
    if cfg.threads == 0:  # the number, in config.json: every launcher then runs the run with it
        cfg.threads = machine_threads()
    return cfg


def _presets(module, filt: str) -> dict[str, Any]:
    """The task's published settings for the filter, or for each of several in order (orthograd,ema: EMA's)."""
    if filt in module.PRESETS:
        return module.PRESETS[filt]
    merged: dict[str, Any] = {}
    for name in filter_parts(filt):
        merged.update(module.PRESETS.get(name, {}))
    return merged


def file_plugins(path: str | Path, listed: list[str]) -> list[str]:
    """A config file's plugins, each relative path taken from the file's folder (a run directory: itself)."""
    base = Path(path) if Path(path).is_dir() else Path(path).parent
    return [p if Path(p).is_absolute() else str(base / p) for p in listed]


def load_file(path: str | Path) -> dict[str, Any]:
    """A TOML preset or a run's config.json, as nested dicts."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG).is_file():
        path = path / CONFIG
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except ValueError as e:  # TOML or JSON errors, undecodable bytes, an integer of over 4,300 digits
        why = ("an integer of over 4,300 digits, which no setting takes" if "integer string conversion" in str(e)
               else " ".join(str(e).split())[:200])
        raise UserError(f"cannot parse {path}: {why}") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot parse {path}: expected a table of settings")
    return data


def _task_key(key: str, task_name: str) -> str:
    """'*.width' -> 'modular.width' for the chosen task, if that task has the option."""
    if not key.startswith("*."):
        return key
    name = key[2:]
    if name not in {f.name for f in fields(sections()[task_name])}:
        raise UserError(f"--{name.replace('_', '-')} does not apply to task {task_name}")
    return f"{task_name}.{name}"


def _set(cfg, key: str, value: Any, task_name: str) -> None:
    section, _, name = key.rpartition(".")
    if section:
        target = getattr(cfg, section) if section in sections() and section in (task_name, *_SHARED) else None
    else:
        target = cfg if name not in sections() else None
    known = {f.name: f for f in fields(target)} if target is not None else {}
    if name not in known:
        raise UserError(f"unknown setting {key!r}; valid settings: {', '.join(_all_keys(task_name))}")
    if key == "plugins":  # (a list, loaded by resolve already)
        pass
    elif value is not None or not is_optional(known[name].type):
        value = _coerce(key, value, base_type(known[name].type))
    setattr(target, name, value)


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise UserError(f"--{_flag(key)} must be a finite number, got {shown(value)}") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        got = shown(value) if isinstance(value, int) else repr(value)
        raise UserError(f"setting {key!r} must be {kind.__name__}, got {got}")
    if kind is float and not math.isfinite(value):
        raise UserError(f"--{_flag(key)} must be a finite number, got {value}")
    return value


def _flag(key: str) -> str:
    return key.rpartition(".")[2].replace("_", "-")


def _all_keys(task_name: str) -> list[str]:
    keys = [f.name for f in fields(run_config_class()) if f.name not in sections()]
    for section, cls in sections().items():
        if section in task_sections() and section != task_name:
            continue
        keys += [f"{section}.{f.name}" for f in fields(cls)]
    return keys


def validate(cfg) -> None:
    """Every check of a run config, each section's own, the task's last. Raises UserError naming the flag and
    the valid range."""
    cfg.check()
    for section in _SHARED:
        getattr(cfg, section).check()
    options = getattr(cfg, cfg.task)
    if hasattr(options, "loss"):
        losses.check(cfg.task, task(cfg.task), options.loss)
    elif cfg.train.softmax_dtype != "auto":
        raise UserError(f"--softmax-dtype sets the precision of a classification loss; the {cfg.task} task trains "
                        "on none (leave it at auto)")
    task(cfg.task).validate(options)
    regularizers.check(cfg)
    noise.check(cfg)


def to_dict(cfg) -> dict[str, Any]:
    """The resolved config as saved in config.json: only the active task's section."""
    data = dataclasses.asdict(cfg)
    for section in task_sections():
        if section != cfg.task:
            data.pop(section, None)
    return data

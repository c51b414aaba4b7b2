"""A researcher's own tasks, filters, losses and optimizers, registered beside grokrun's, checked the same way.

    grokrun train --plugin my_plugin.py --task majority --filter heavyball --hb-gain 1 --loss hinge

Two ways in: ``--plugin FILE.py`` (repeatable; also ``plugins = [...]`` in a config file; recorded in
config.json, so a rerun, a resume, a sweep worker and analyze load it again), and the entry points of an
installed package, in the groups ``grokrun.tasks`` (a task module), ``grokrun.filters`` (a GradFilter
subclass), ``grokrun.losses`` (a Loss subclass) and ``grokrun.optimizers`` (an optimizer builder). A plugin file
holds any of these: it is a task if it defines a task's names (NAME, Options, build, ... as in
grokrun/tasks/base.py); each GradFilter and Loss subclass it defines is a filter and a loss; each function it
marks with ``@grokrun.optim.optimizer("name")`` an optimizer. See docs/extending.md for a complete one.

Every entry is checked against its kind's protocol when it registers: a file that fails to import, an entry
missing what its kind needs, or a name that another source registered already is one line naming the file and
the problem (UserError), before anything is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from grokrun.errors import UserError

GROUPS = {"grokrun.tasks": "task", "grokrun.filters": "filter", "grokrun.losses": "loss",
          "grokrun.optimizers": "optimizer"}
TASK_NAMES = ("NAME", "Options", "DEFAULTS", "PRESETS", "validate", "describe", "build_model", "build")

generation = 0
"""Bumped at every registration: config and the flags recompose what they build from the registries."""
_files: dict[str, list[tuple[str, str]]] = {}  # resolved path -> (kind, name) of each entry it registered
_sources: dict[tuple[str, str], str] = {}  # (kind, name) -> the file or package that registered it
_installed_loaded = False
_builtins: dict[str, dict] | None = None


def registries() -> dict[str, dict]:
    """The four registries, by kind: each a plain dict beside what it lists."""
    from grokrun.filters import FILTERS
    from grokrun.losses import LOSSES
    from grokrun.optim import OPTIMIZERS
    from grokrun.tasks import TASKS

    return {"task": TASKS, "filter": FILTERS, "loss": LOSSES, "optimizer": OPTIMIZERS}


def load(paths: list[str] | tuple[str, ...]) -> list[str]:
    """Load plugin files (each once per process); returns their resolved paths, as config.json records them."""
    load_installed()
    resolved = []
    for given in paths:
        path = Path(given).expanduser()
        if not isinstance(given, str) or not given or path.suffix != ".py" or not path.is_file():
            raise UserError(f"--plugin {given}: no such Python file (a plugin is a .py file that defines tasks, "
                            "filters, losses or optimizers)")
        key = str(path.resolve())
        if key not in _files:
            _load_file(key)
        resolved.append(key)
    return resolved


def _load_file(path: str) -> None:
    name = f"grokrun_plugin_{Path(path).stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses, inspect and pickling look a class's module up by name)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a plugin's own error, whatever it is: name the file and the line
        sys.modules.pop(name, None)
        why = f"{e.msg} (line {e.lineno})" if isinstance(e, SyntaxError) else _first_line(e)
        raise UserError(f"plugin {path}: cannot import it: {type(e).__name__}: {why}") from None
    entries = discover(module)
    if not entries:
        raise UserError(f"plugin {path}: defines no task, filter, loss or optimizer (see docs/extending.md)")
    _files[path] = []
    for kind, entry_name, entry in entries:
        register(kind, entry_name, entry, source=path)
        _files[path].append((kind, entry_name))


def discover(module: ModuleType) -> list[tuple[str, str, Any]]:
    """What a plugin module defines: (kind, name, entry) for its task, filters, losses and optimizers."""
    from grokrun.filters import GradFilter
    from grokrun.losses import Loss

    found: list[tuple[str, str, Any]] = []
    if hasattr(module, "NAME") or hasattr(module, "build"):
        found.append(("task", getattr(module, "NAME", ""), module))
    for value in vars(module).values():
        if not (inspect.isclass(value) or inspect.isfunction(value)) or value.__module__ != module.__name__:
            continue
        if inspect.isclass(value) and issubclass(value, GradFilter):
            found.append(("filter", getattr(value, "name", ""), value))
        elif inspect.isclass(value) and issubclass(value, Loss):
            found.append(("loss", getattr(value, "name", ""), value))
        elif getattr(value, "optimizer_name", None):
            found.append(("optimizer", value.optimizer_name, value))
    return found


def load_installed() -> None:
    """Register the entry points of installed packages (once per process)."""
    global _installed_loaded
    if _installed_loaded:
        return
    _installed_loaded = True
    _remember_builtins()
    from importlib.metadata import entry_points

    for group, kind in GROUPS.items():
        for ep in entry_points(group=group):
            source = f"entry point {ep.name} = {ep.value} ({group})"
            try:
                entry = ep.load()
            except Exception as e:
                raise UserError(f"plugin {source}: cannot import it: {type(e).__name__}: {_first_line(e)}") from None
            register(kind, ep.name, entry, source)


def register(kind: str, name: str, entry: Any, source: str) -> None:
    """Add an entry to its registry after checking it (UserError naming ``source`` and the problem)."""
    global generation
    _remember_builtins()
    registry = registries()[kind]
    problem = PROTOCOLS[kind](name, entry)
    if problem:
        raise UserError(f"plugin {source}: {kind} {name or '(unnamed)'} {problem}")
    if name in registry and _sources.get((kind, name)) != source:
        owner = _sources.get((kind, name), "grokrun itself")
        raise UserError(f"plugin {source}: {kind} name {name!r} is taken (by {owner}); rename it")
    if kind == "loss" and inspect.isclass(entry):
        entry = entry()
    registry[name] = entry
    _sources[(kind, name)] = source
    generation += 1


def reset() -> None:
    """Forget every plugin: the registries hold grokrun's own entries again (for tests)."""
    global generation, _installed_loaded
    if not _sources and not _files:  # nothing registered since: the composed config and flags still hold
        return
    if _builtins is not None:
        for kind, registry in registries().items():
            registry.clear()
            registry.update(_builtins[kind])
    _files.clear()
    _sources.clear()
    _installed_loaded = False
    generation += 1


def _remember_builtins() -> None:
    global _builtins
    if _builtins is None:
        _builtins = {kind: dict(registry) for kind, registry in registries().items()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return " ".join(text[0].split())[:160] if text else ""


# --- the protocols: what each kind of entry must have ------------------------------------------------------

def _documented(cls: type, what: str) -> str | None:
    from grokrun.fields import base_type, field_docs

    if not dataclasses.is_dataclass(cls):
        return f"needs {what} to be a dataclass"
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name not in docs:
            return f"has a setting {f.name!r} without a docstring under it (it becomes the flag's --help)"
        try:
            base_type(f.type)
        except TypeError as e:
            return f"setting {f.name!r}: {e}"
    return None


def check_task(name: str, module: Any) -> str | None:
    missing = [n for n in TASK_NAMES if not hasattr(module, n)]
    if missing:
        return f"is missing {', '.join(missing)} (a task module defines {', '.join(TASK_NAMES)})"
    if not isinstance(name, str) or not name.isidentifier() or name != module.NAME:
        return f"needs NAME to be a plain name (letters, digits, _), got {module.NAME!r}"
    if any(not callable(getattr(module, n)) for n in ("validate", "describe", "build_model", "build")):
        return "needs validate, describe, build_model and build to be functions"
    problem = _documented(module.Options, "Options")
    if problem:
        return problem
    from grokrun.fields import base_type
    from grokrun.tasks import task

    for f in dataclasses.fields(module.Options):  # an option another task has too is one flag: one type
        for other in registries()["task"]:
            same = {g.name: g for g in dataclasses.fields(task(other).Options)}.get(f.name)
            if other != name and same is not None and base_type(same.type) is not base_type(f.type):
                return (f"option {f.name!r} is a {base_type(f.type).__name__}, but the {other} task's is a "
                        f"{base_type(same.type).__name__}; rename it")
    return None


def check_filter(name: str, cls: Any) -> str | None:
    from grokrun.filters import GradFilter

    if not (inspect.isclass(cls) and issubclass(cls, GradFilter)):
        return "is not a GradFilter subclass"
    if not isinstance(name, str) or not name.isidentifier() or name != cls.name:
        return f"needs a plain name (class attribute name = ...), got {cls.name!r}"
    if cls is not GradFilter and cls._filter is GradFilter._filter and cls.apply is GradFilter.apply:  # (none: the baseline)
        return "is missing _filter (or apply): it would leave every gradient as it is"
    problem = _documented(cls.Settings, "Settings")
    if problem:
        return problem
    from grokrun.fields import base_type

    for f in dataclasses.fields(cls.Settings):
        if f.name in ("name", "start"):
            return f"cannot name a setting {f.name!r} (every filter has it)"
        for other in registries()["filter"].values():  # a setting two filters share is one flag: one type
            same = {g.name: g for g in dataclasses.fields(other.Settings)}.get(f.name)
            if other is not cls and same is not None and base_type(same.type) is not base_type(f.type):
                return (f"setting {f.name!r} is a {base_type(f.type).__name__}, but the {other.name} filter's is "
                        f"a {base_type(same.type).__name__}; rename it")
    return None


def check_loss(name: str, entry: Any) -> str | None:
    from grokrun.losses import Loss

    cls = entry if inspect.isclass(entry) else type(entry)
    if not issubclass(cls, Loss):
        return "is not a grokrun.losses.Loss subclass"
    if not isinstance(name, str) or not name.isidentifier() or name != cls.name:
        return f"needs a plain name (class attribute name = ...), got {cls.name!r}"
    if cls.__call__ is Loss.__call__:
        return "is missing __call__(outputs, y, dtype=None, reduction='mean')"
    if not isinstance(cls.tasks, tuple):
        return "needs tasks to be a tuple of task names"
    return None


def check_optimizer(name: str, build: Any) -> str | None:
    if not isinstance(name, str) or not name.isidentifier():
        return f"needs a plain name, got {name!r}"
    wanted = 3 if getattr(build, "needs_model", False) else 2
    if not callable(build) or len(inspect.signature(build).parameters) != wanted:
        return ("must be a function build(optim_settings, params) -> torch optimizer (with needs_model = True: "
                "build(optim_settings, named_params, model))")
    return None


PROTOCOLS = {"task": check_task, "filter": check_filter, "loss": check_loss, "optimizer": check_optimizer}

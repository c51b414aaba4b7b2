"""Task registry: name -> module. A new task is one module beside these (see base.py) and one line here, or a
user's plugin file (grokrun.plugins), which registers its module the same way.

    from grokrun.tasks import task
    task("modular").PRESETS["ema"]

Task modules import torch only when a run is built, so reading the registry is cheap.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, str | ModuleType] = {
    "modular": "grokrun.tasks.modular",
    "mnist": "grokrun.tasks.mnist",
    "imdb": "grokrun.tasks.imdb",
    "qm9": "grokrun.tasks.qm9",
    "parity": "grokrun.tasks.parity",
    "xor": "grokrun.tasks.xor",
}


def task(name: str) -> ModuleType:
    """The module of a registered task."""
    entry = TASKS[name]
    return entry if isinstance(entry, ModuleType) else importlib.import_module(entry)

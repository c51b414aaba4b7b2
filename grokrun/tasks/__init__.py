"""Task registry: name -> module. A new task is one module beside these (see base.py) and one line here.

    from grokrun.tasks import task
    task("modular").PRESETS["ema"]

Task modules import torch only when a run is built, so reading the registry is cheap.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS = {
    "modular": "grokrun.tasks.modular",
    "mnist": "grokrun.tasks.mnist",
    "imdb": "grokrun.tasks.imdb",
    "qm9": "grokrun.tasks.qm9",
    "parity": "grokrun.tasks.parity",
}


def task(name: str) -> ModuleType:
    """The module of a registered task."""
    return importlib.import_module(TASKS[name])

"""Task registry: name -> module. Modules load on first use, so importing this is free of torch.

Each module exposes ``build(cfg, device, dtype) -> Task`` and ``validate(task_cfg)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS = {
    "modular": "grokrun.tasks.modular",
    "mnist": "grokrun.tasks.mnist",
    "imdb": "grokrun.tasks.imdb",
    "qm9": "grokrun.tasks.qm9",
}


def task_module(name: str) -> ModuleType:
    return importlib.import_module(TASKS[name])

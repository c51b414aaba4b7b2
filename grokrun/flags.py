"""Every config field as a CLI flag, made once from the dataclasses: their field docstrings are the help.

    for flag in flags(): ...   # Flag("lamb", "filter.lamb", float, "Amplification ...", "Filter", 2.0)

A task's options share one flag across tasks (--width sets the chosen task's width). Settings chosen by
name (--task, --filter, --optimizer) list the registry's keys in their help, so a new task, filter or
optimizer appears there without editing this file.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass, fields
from typing import Any

from grokrun.config import SECTIONS, TASK_SECTIONS, RunBase, base_type
from grokrun.filters import FILTERS
from grokrun.optim import OPTIMIZERS
from grokrun.tasks import TASKS

# Flag names that are not simply the field name with dashes.
_FLAG_NAMES = {"filter.name": "filter", "filter.start": "filter-start", "filter.warmup": "ma-warmup",
               "optim.name": "optimizer"}
# Settings whose value is a registry key.
_CHOICES = {"task": TASKS, "filter.name": FILTERS, "optim.name": OPTIMIZERS}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, whitespace collapsed."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@dataclass(frozen=True)
class Flag:
    """One CLI option: its name, the config key it sets ("optim.lr"; "*.width" for a task option)."""
    name: str
    key: str
    type: type
    help: str
    panel: str
    default: Any


def _help(key: str, doc: str) -> str:
    if key in _CHOICES:
        doc += f" One of: {', '.join(_CHOICES[key])}."
    return doc


def flags() -> list[Flag]:
    """Every config field as a CLI option. Task options share one flag across tasks (--width)."""
    out: list[Flag] = []
    top_docs = field_docs(RunBase)
    for f in fields(RunBase):
        if f.name in SECTIONS:
            continue
        out.append(Flag(f.name.replace("_", "-"), f.name, base_type(f.type), _help(f.name, top_docs[f.name]), "Run",
                        None if f.default == "" else f.default))
    seen: dict[str, int] = {}
    per_task: dict[str, list[tuple[str, str, Any]]] = {}  # flag -> (task, help, default) of each task having it
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        for f in fields(cls):
            key = f"{section}.{f.name}"
            task_option = section in TASK_SECTIONS
            name = _FLAG_NAMES.get(key, f.name.replace("_", "-"))
            if task_option:
                per_task.setdefault(name, []).append((section, docs[f.name], f.default))
            if task_option and name in seen:  # the same option of another task: one flag serves both
                continue
            seen[name] = len(out)
            panel = "Task" if task_option else section.capitalize()
            out.append(Flag(name, f"*.{f.name}" if task_option else key, base_type(f.type), _help(key, docs[f.name]),
                            panel, None if f.default == "" else f.default))
    for name, entries in per_task.items():  # each task option names its tasks, their help and their defaults
        flag = out[seen[name]]
        tasks = ", ".join(t for t, _, _ in entries)
        if len({doc for _, doc, _ in entries}) == 1:
            help = f"({tasks}) {flag.help}"
        else:  # the same name means different things: say each (--layers: decoder layers, LSTM layers)
            help = " ".join(f"{t}: {doc}" for t, doc, _ in entries)
        default = (", ".join(f"{t}: {d}" for t, _, d in entries) if len({d for _, _, d in entries}) > 1
                   else flag.default)
        out[seen[name]] = dataclasses.replace(flag, help=help, default=default)
    return out

"""Every config field as a CLI flag, made from the config dataclasses: their field docstrings are the help.

    for flag in flags(): ...   # Flag("lamb", "filter.lamb", float, "(ema, ma) Amplification ...", "Filter", ...)

A task's options share one flag across tasks (--width sets the chosen task's width), and a filter's settings
one flag across filters (--lamb); such a flag names the entries that have it, and each one's default where
they differ. Settings chosen by name (--task, --filter, --optimizer) list the registry's keys in their help,
so a new task, filter or optimizer (grokrun's or a plugin's) appears there without editing this file. The
flags are made again when a plugin registers an entry.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, fields
from typing import Annotated, Any, Optional

from grokrun import plugins
from grokrun.config import filter_owners, section_docs, sections, task_sections
from grokrun.fields import base_type, field_docs
from grokrun.filters import FILTERS
from grokrun.optim import OPTIMIZERS
from grokrun.settings import RunBase
from grokrun.tasks import TASKS

# Flag names that are not simply the field name with dashes.
_FLAG_NAMES = {"filter.name": "filter", "filter.start": "filter-start", "filter.warmup": "ma-warmup",
               "optim.name": "optimizer"}
# Settings whose value is a registry key.
_CHOICES = {"task": TASKS, "filter.name": FILTERS, "optim.name": OPTIMIZERS}
# Top-level settings that are no flag of their own (--plugin is the CLI's: it must load before the flags exist).
_NOT_FLAGS = ("plugins",)


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


_cache: dict[str, Any] = {"generation": None}


def flags() -> list[Flag]:
    """Every config field as a CLI option (made once per state of the registries)."""
    if _cache["generation"] != plugins.generation:
        _cache.update(generation=plugins.generation, flags=_make())
    return _cache["flags"]


def _make() -> list[Flag]:
    out: list[Flag] = []
    top_docs = field_docs(RunBase)
    for f in fields(RunBase):
        if f.name in sections() or f.name in _NOT_FLAGS:
            continue
        out.append(Flag(f.name.replace("_", "-"), f.name, base_type(f.type), _help(f.name, top_docs[f.name]), "Run",
                        None if f.default == "" else f.default))
    seen: dict[str, int] = {}
    shared: dict[str, list[tuple[str, str, Any]]] = {}  # flag -> (owner, help, default) of each entry having it
    for section, cls in sections().items():
        docs = section_docs(section)
        task_option = section in task_sections()
        for f in fields(cls):
            key = f"{section}.{f.name}"
            name = _FLAG_NAMES.get(key, f.name.replace("_", "-"))
            if task_option:
                shared.setdefault(name, []).append((section, docs[f.name], f.default))
            elif section == "filter" and filter_owners(f.name):
                shared[name] = [(n, field_docs(FILTERS[n].Settings)[f.name], FILTERS[n].defaults()[f.name])
                                for n in filter_owners(f.name)]
            if task_option and name in seen:  # the same option of another task: one flag serves both
                continue
            seen[name] = len(out)
            panel = "Task" if task_option else section.capitalize()
            out.append(Flag(name, f"*.{f.name}" if task_option else key, base_type(f.type), _help(key, docs[f.name]),
                            panel, None if f.default == "" else f.default))
    for name, entries in shared.items():  # each shared option names its owners, their help and their defaults
        out[seen[name]] = _merged(out[seen[name]], entries)
    return out


def _merged(flag: Flag, entries: list[tuple[str, str, Any]]) -> Flag:
    owners = ", ".join(t for t, _, _ in entries)
    if len({doc for _, doc, _ in entries}) == 1:
        help = f"({owners}) {flag.help}"
    else:  # the same name means different things: say each (--layers: decoder layers, LSTM layers)
        help = " ".join(f"{t}: {doc}" for t, doc, _ in entries)
    default = (", ".join(f"{t}: {d}" for t, _, d in entries) if len({d for _, _, d in entries}) > 1
               else flag.default)
    return dataclasses.replace(flag, help=help, default=default)


def typer_parameters(text: bool = False) -> list[inspect.Parameter]:
    """One keyword parameter per config field; None means 'not given', so presets and files show through. With
    ``text``, every flag but the on/off ones takes text (a sweep's lists and ranges)."""
    import typer
    from rich.markup import escape

    params = []
    for flag in flags():
        decl = f"--{flag.name}/--no-{flag.name}" if flag.type is bool else f"--{flag.name}"
        help = escape(flag.help)
        if flag.default is not None:
            help += f" [dim]\\[default: {escape(str(flag.default))}][/dim]"
        option = typer.Option(decl, help=help, rich_help_panel=flag.panel, show_default=False,
                              metavar="" if flag.type is bool else None)  # an on/off flag takes no value
        kind = str if text and flag.type is not bool else flag.type
        params.append(inspect.Parameter(flag.name.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[kind], option]))
    return params

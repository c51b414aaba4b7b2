"""Any optimizer of pytorch_optimizer by name (pip install 'grokrun[optimizers]'), beside grokrun's own.

    grokrun train --task modular --optimizer lion --lr 1e-4 --optimizer-args "betas = [0.95, 0.98]"
    grokrun train --task modular --optimizer grokfastadamw --optimizer-args "grokfast_lamb = 5.0"

A name that is not one of grokrun's optimizers (grokrun.optim.OPTIMIZERS, which win a name both have) is looked
up in the library. --lr and --weight-decay reach it; its other hyperparameters keep the library's defaults
unless --optimizer-args sets them: the body of a TOML inline table, checked against the class's signature,
recorded in config.json as given. Its seeds train one after another (no test has shown any of them to step
stacked seeds as alone: grokrun.optim.stacks is False for a name outside OPTIMIZERS), and --decay-to init is
refused (how it decays is the library's own). The library is imported only when such a name is asked for.
"""

from __future__ import annotations

import inspect
import tomllib
from typing import Any

from grokrun.errors import UserError

EXTRA = "pip install 'grokrun[optimizers]'"


def _library():
    try:
        import pytorch_optimizer
    except ImportError:
        return None
    return pytorch_optimizer


def names() -> list[str]:
    """The library's optimizers (empty without it)."""
    lib = _library()
    return sorted(lib.get_supported_optimizers()) if lib else []


def parse_args(text: str) -> dict[str, Any]:
    """--optimizer-args "betas = [0.9, 0.95], weight_decouple = false" as a dict; UserError in one line."""
    if not text.strip():
        return {}
    try:
        return tomllib.loads(f"args = {{{text}}}")["args"]
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"--optimizer-args must be TOML assignments separated by commas, such as "
                        f"\"betas = [0.9, 0.95], eps = 1e-8\"; got {text!r} ({e})") from None


def optimizer_class(name: str, built_in: list[str]):
    """The library's class for ``name``; UserError naming the choices, or the extra to install."""
    lib = _library()
    if lib is None:
        raise UserError(f"unknown optimizer {name!r}; grokrun's are {', '.join(built_in)}, and the optimizers of "
                        f"pytorch_optimizer (lion, grokfastadamw, adopt, ...) need it: {EXTRA}")
    if name.lower() not in set(lib.get_supported_optimizers()):
        raise UserError(f"unknown optimizer {name!r}; choose one of: {', '.join(built_in)}, or pytorch_optimizer's: "
                        f"{', '.join(names())}")
    return lib.load_optimizer(name.lower())


def arguments(cls) -> list[str]:
    """The keyword arguments ``cls`` names (not params, not a catch-all **kwargs, which would take any typo)."""
    return [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[2:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check(o, built_in: list[str]) -> tuple[Any, list[str], dict[str, Any]]:
    """UserError unless OptimConfig ``o`` names a library optimizer whose --optimizer-args it takes; else (its
    class, the arguments it names, the arguments asked for)."""
    cls = optimizer_class(o.name, built_in)
    takes, asked = arguments(cls), parse_args(o.optimizer_args)
    for key in asked:
        if key not in takes:
            raise UserError(f"--optimizer-args: {o.name} takes no argument {key!r}; it takes: {', '.join(takes)}")
    return cls, takes, asked


def build(o, params, built_in: tuple[str, ...] = ()):
    """The library optimizer ``o.name`` over ``params``, checked as ``check`` does: --lr, --weight-decay, then
    --optimizer-args."""
    cls, takes, asked = check(o, list(built_in))
    given = {k: v for k, v in (("lr", o.lr), ("weight_decay", o.weight_decay)) if k in takes}
    extra = {k: tuple(v) if isinstance(v, list) else v for k, v in asked.items()}
    try:
        return cls(params, **{**given, **extra})
    except (TypeError, ValueError) as e:
        raise UserError(f"--optimizer {o.name} --optimizer-args {o.optimizer_args!r}: {e}") from None


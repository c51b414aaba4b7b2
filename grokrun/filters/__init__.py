"""Gradient filters that amplify the slow part of the gradient (Grokfast, Lee et al. 2024), and ⊥Grad.

Call between ``loss.backward()`` and ``optimizer.step()``:

    from grokrun.filters import EMAFilter, MAFilter
    f = EMAFilter(alpha=0.98, lamb=2.0)
    f.apply(model.parameters())     # rewrites each .grad in place
    f.state_dict(); f.load_state_dict(state)

State is keyed by a parameter's position in the iterable given to ``apply``, so pass the parameters in the
same order every call (``model.parameters()`` does). A parameter whose grad is None is skipped and keeps its
state; one with ``requires_grad=False`` is ignored. Filters work elementwise (multi-tensor ``torch._foreach_*``
ops), so one filter over seeds stacked into one model filters each seed as if it ran alone.

One file per filter (ema.py, ma.py, orthograd.py; base.py says what a filter is) and one entry in ``FILTERS``,
which a user's plugin joins the same way (grokrun.plugins). ``attach`` puts a filter into any optimizer's step;
``gradfilter_ema`` / ``gradfilter_ma`` are drop-ins for the published snippet (snippet.py). torch is imported on
first use, so reading the registry costs nothing.
"""

from __future__ import annotations

from typing import Any

from grokrun.filters.attach import STATE_KEY, Attached, attach, detach
from grokrun.filters.base import Chain, GradFilter
from grokrun.filters.ema import EMAFilter
from grokrun.filters.ma import MAFilter
from grokrun.filters.orthograd import OrthoGradFilter
from grokrun.filters.snippet import gradfilter_ema, gradfilter_ma

FILTERS: dict[str, type[GradFilter]] = {"none": GradFilter, "ema": EMAFilter, "ma": MAFilter,
                                        "orthograd": OrthoGradFilter}

__all__ = ["FILTERS", "STATE_KEY", "Attached", "Chain", "EMAFilter", "GradFilter", "MAFilter", "OrthoGradFilter",
           "attach", "check_name", "defaults_of", "describe_variant", "detach", "gradfilter_ema", "gradfilter_ma",
           "make", "parts"]


def parts(name: str) -> list[str]:
    """The filters a --filter value names, in order: "orthograd,ema" (or "orthograd+ema", the form a sweep's
    comma list can hold) -> ["orthograd", "ema"]."""
    return [p.strip() for p in name.replace("+", ",").split(",")]


def check_name(name: Any) -> None:
    """UserError unless ``name`` is a registered filter or several, comma-separated ("none" stands alone)."""
    from grokrun.errors import UserError

    names = parts(name) if isinstance(name, str) else [repr(name)]  # (a config file's list or number: unknown)
    unknown = next((n for n in names if n not in FILTERS), None)
    if unknown is not None or (len(names) > 1 and "none" in names) or len(set(names)) < len(names):
        what = f"unknown filter {unknown!r}" if unknown is not None else f"the filters {name!r} cannot be combined"
        raise UserError(f"{what}; choose one of: {', '.join(FILTERS)}, or several in order, comma-separated "
                        "(orthograd,ema; in a sweep's list, orthograd+ema)")


def defaults_of(name: str) -> dict[str, Any]:
    """The filter settings the named filters use where no preset sets them (the later filter's win)."""
    merged: dict[str, Any] = {}
    for n in parts(name):
        merged.update(FILTERS[n].defaults())
    return merged


def make(fc) -> GradFilter:
    """The filter a run's filter settings name: one, or a Chain of several."""
    names = parts(fc.name)
    if len(names) == 1:
        return FILTERS[names[0]].from_config(fc)
    return Chain([FILTERS[n].from_config(fc) for n in names])


def describe_variant(config: dict[str, Any]) -> str:
    """How a run was trained, from its saved config: "EMA α=0.98 λ=2 · adam wd 0.005"."""
    f, o = config.get("filter", {}), config.get("optim", {})
    name = f.get("name", "none")
    text = " then ".join(FILTERS[n].describe(f) if n in FILTERS else n for n in parts(name))
    if name != "none" and f.get("start"):
        text += f" from step {f['start']:,}"
    if name != "none" and f.get("normalize_lr"):
        text += " · lr / (1 + λ)"
    extra = f" ({o['optimizer_args']})" if o.get("optimizer_args") else ""
    anneal = f" · cosine over {o['anneal_steps']:,}" if o.get("anneal_steps") else ""
    m, t = config.get("model", {}), config.get("train", {})
    others = [f"{label} {value:g}" for label, value in (
        ("dropout", m.get("dropout")), ("weight noise", m.get("weight_noise")), ("update noise", o.get("grad_noise")))
        if value]
    if t.get("reg", "none") != "none":
        others.append(f"{ {'grokalign': 'GrokAlign', 'jacobian': 'Jacobian norm'}.get(t['reg'], t['reg'])} "
                      f"λ={t.get('reg_weight', 0):g}")
    return f"{text} · {o.get('name', '?')}{extra} wd {o.get('weight_decay', 0):g}{anneal}" + "".join(
        f" · {x}" for x in others)


def normalized_rate(f) -> float:
    """--normalize-lr: 1 / (1 + lamb) where one of the filters amplifies by lamb (its Settings has lamb), else 1."""
    from dataclasses import fields

    amplifies = any("lamb" in {g.name for g in fields(FILTERS[p].Settings)} for p in parts(f.name) if p in FILTERS)
    return 1.0 / (1.0 + f.lamb) if f.normalize_lr and amplifies and getattr(f, "lamb", 0) else 1.0

"""Dataclass fields as settings: the docstring under each field (its --help) and its Python type.

    field_docs(EMAFilter.Settings)   # {"alpha": "EMA momentum, in [0, 1).", ...}
    base_type(f.type)                # float, for "float" or float or "float | None"
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "float | None": float}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, whitespace collapsed (fields without one are left out)."""
    return dict(_field_docs(cls))


@functools.lru_cache(maxsize=None)
def _field_docs(cls: type) -> dict[str, str]:  # (read from the class's source, which does not change)
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def base_type(annotation) -> type:
    """The Python type of a field's annotation, written as a string (postponed annotations) or not."""
    if isinstance(annotation, type) and annotation in (str, int, float, bool):
        return annotation
    try:
        return _TYPES[str(annotation).replace("typing.Optional[float]", "float | None")]
    except KeyError:
        raise TypeError(f"a setting is a str, int, float, bool or float | None, not {annotation}") from None


def is_optional(annotation) -> bool:
    """Whether the field may be None (``float | None``: a setting that can be left unset)."""
    return str(annotation) in ("float | None", "typing.Optional[float]", "float | None")

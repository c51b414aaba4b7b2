"""What every gradient filter is: ``GradFilter`` (also the baseline, no filtering) and ``Chain`` (several in order).

    class MyFilter(GradFilter):
        name = "mine"
        @dataclass
        class Settings:
            boost: float = 1.0
            # (a docstring under each field: it becomes --boost's help)
        def _filter(self, keys, grads, amplify): ...

A filter's ``Settings`` dataclass declares its own settings: each field becomes a flag (--boost), a config key
(filter.boost) and a field of config.json, its docstring the help, its default the filter's default where a
task has no published preset; ``__post_init__`` holds the checks (UserError naming the flag), stated once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from torch import Tensor


def with_grads(parameters: Iterable[Tensor]) -> tuple[list[int], list[Tensor]]:
    """Positions and grads of the parameters that take part in this step."""
    keys, grads = [], []
    for i, p in enumerate(parameters):
        if p.requires_grad and p.grad is not None:
            keys.append(i)
            grads.append(p.grad)
    return keys, grads


def state_to(state: Any, device) -> Any:
    """A filter's saved state (tensors loaded on the CPU, in nested dicts) on ``device``; None leaves it."""
    if device is None:
        return state
    if hasattr(state, "to") and hasattr(state, "device"):
        return state.to(device)
    if isinstance(state, dict):
        return {k: state_to(v, device) for k, v in state.items()}
    return state


class GradFilter:
    """No filtering: the baseline. Subclasses set ``name`` and ``Settings``, and override ``_filter`` (or
    ``apply``) and, with state, ``state_dict`` / ``load_state_dict``."""

    name = "none"

    @dataclass
    class Settings:
        """The filter's own settings (none for the baseline)."""

    seed_axes: dict[str, int] = {}
    """For seeds trained as one stacked model: the state_dict entries that hold a tensor per parameter, and
    which axis of those tensors runs over the seeds (the parameter's own first axis, or after the filter's
    own leading axes). Other entries are the same for every seed. Lets a checkpoint be split per seed."""

    stacked_seeds = False
    """Set by the engine when the parameters are seeds stacked on a leading axis (grokrun.stacking): a filter
    that reduces over a parameter (⊥Grad's projection) then reduces over each seed's slice."""

    @classmethod
    def setting_names(cls) -> list[str]:
        return [f.name for f in fields(cls.Settings)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Its settings' defaults: what it uses where no published preset sets them."""
        return {f.name: f.default for f in fields(cls.Settings)}

    @classmethod
    def from_config(cls, fc) -> GradFilter:
        """The filter a run's filter settings describe (they are checked by its Settings)."""
        return cls(**{name: getattr(fc, name) for name in cls.setting_names()})

    @classmethod
    def describe(cls, fc: dict[str, Any]) -> str:
        """The filter and its settings, for titles and legends, from a saved config's filter section."""
        if cls.name == "none":
            return "no filter"
        return " ".join([cls.name, *(f"{k}={fc[k]:g}" if isinstance(fc.get(k), float) else f"{k}={fc.get(k)}"
                                     for k in cls.setting_names())])

    def set_stacked_seeds(self, stacked: bool) -> None:
        self.stacked_seeds = stacked

    def apply(self, parameters: Iterable[Tensor], amplify: bool = True) -> None:
        """Update the filter with this step's grads and, if ``amplify``, add lamb * (slow part) to them.

        ``amplify=False`` updates the state only (used to withhold amplification for the first steps).
        """
        keys, grads = with_grads(parameters)
        if grads:
            self._filter(keys, grads, amplify)

    def _filter(self, keys: list[int], grads: list[Tensor], amplify: bool) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Chain(GradFilter):
    """Several filters applied in order (``--filter orthograd,ema``): each sees the gradients the one before
    it left. State and seed axes are each filter's, side by side."""

    name = "chain"

    def __init__(self, filters: list[GradFilter]):
        self.filters = filters
        self.seed_axes = {str(i): f.seed_axes for i, f in enumerate(filters)}

    def set_stacked_seeds(self, stacked):
        self.stacked_seeds = stacked
        for f in self.filters:
            f.set_stacked_seeds(stacked)

    def apply(self, parameters, amplify=True):
        parameters = list(parameters)
        for f in self.filters:
            f.apply(parameters, amplify)

    def state_dict(self):
        return {str(i): f.state_dict() for i, f in enumerate(self.filters)}

    def load_state_dict(self, state):
        for i, f in enumerate(self.filters):
            f.load_state_dict(state[str(i)])

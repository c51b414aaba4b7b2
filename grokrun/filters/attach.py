"""A filter in any training loop: attached to the optimizer, it filters the gradients at every step.

    attach(optimizer, EMAFilter(alpha=0.98, lamb=2.0))
    loss.backward(); optimizer.step()            # the step filters first
"""

from __future__ import annotations

from grokrun.filters.base import GradFilter, state_to
from grokrun.optim import StepHook


class Attached(StepHook):
    """A filter attached to an optimizer (``attach``); ``detach()`` takes it off again."""

    KEY = "grokrun_filter"  # where an attached filter's state sits in optimizer.state_dict()

    def __init__(self, optimizer, grad_filter: GradFilter):
        super().__init__(optimizer)
        self.filter = grad_filter
        optimizer._grokrun_filter = self

    def before_step(self) -> None:
        self.filter.apply(self.params())

    def state(self) -> dict:
        return self.filter.state_dict()

    def load(self, saved: dict) -> None:
        self.filter.load_state_dict(state_to(saved, next((p.device for p in self.params()), None)))

    def detach(self) -> None:
        super().detach()
        if getattr(self.optimizer, "_grokrun_filter", None) is self:
            del self.optimizer._grokrun_filter


STATE_KEY = Attached.KEY


def attach(optimizer, grad_filter: GradFilter) -> Attached:
    """Filter the gradients at every ``optimizer.step()``, before the update, in any training loop.

    The filter runs as an optimizer step pre-hook, over the optimizer's parameters in its order. With
    ``torch.amp.GradScaler``, ``scaler.step(optimizer)`` unscales the gradients before calling the step, so the
    filter sees the true gradients, and a step the scaler skips (inf or NaN) never reaches it, leaving its
    state alone. Its state goes into ``optimizer.state_dict()`` (under "grokrun_filter") and comes back with
    ``optimizer.load_state_dict``, so any checkpoint that saves the optimizer carries it. One filter per
    optimizer: attaching another first detaches the previous one."""
    previous = getattr(optimizer, "_grokrun_filter", None)
    if previous is not None:
        previous.detach()
    return Attached(optimizer, grad_filter)


def detach(optimizer) -> None:
    """Take the attached filter off ``optimizer`` (nothing if none is attached)."""
    attached = getattr(optimizer, "_grokrun_filter", None)
    if attached is not None:
        attached.detach()

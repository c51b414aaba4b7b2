"""Grokfast's MA filter: the mean (or sum) of the last ``window_size`` gradients, added back with weight ``lamb``.

    f = MAFilter(window_size=100, lamb=5.0); f.apply(model.parameters())

Per parameter: keep the last ``window_size`` raw gradients; g_t <- g_t + lamb * mean(kept) (or their sum). With
``warmup`` nothing changes until the window is full; without it the mean is over what is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from grokrun.errors import check_choice, check_range
from grokrun.filters.base import GradFilter

if TYPE_CHECKING:
    from torch import Tensor

MAX_WINDOW = 1_000  # MA keeps window x the model's size of gradients: 1.7 GB for the modular decoder at 1,000


class MAFilter(GradFilter):
    """Moving average (or sum) of the last ``window_size`` gradients, added back with weight ``lamb``.

    A ring buffer of the raw gradients and a running sum: each step adds the new gradient and
    subtracts the one that leaves the window, so the cost is O(1) in the window size.
    """

    name = "ma"
    seed_axes = {"ring": 1, "total": 0}  # ring: (window, *parameter shape)

    @dataclass
    class Settings:
        window_size: int = 100
        """MA window length, 1 to 1,000 (MA keeps that many gradients of the whole model)."""
        lamb: float = 5.0
        """Amplification of the slow gradient, >= 0."""
        filter_type: str = "mean"
        """MA: add the mean or the sum of the window (mean | sum)."""
        warmup: bool = True
        """MA: leave gradients unchanged until the window is full (not the learning-rate --warmup-steps)."""

        def __post_init__(self):
            check_range("window-size", 1 <= self.window_size <= MAX_WINDOW, f"in [1, {MAX_WINDOW:,}]",
                        self.window_size)
            check_range("lamb", self.lamb >= 0, ">= 0", self.lamb)
            check_choice("filter type", self.filter_type, ("mean", "sum"))

    def __init__(self, window_size: int = 100, lamb: float = 5.0, filter_type: str = "mean",
                 warmup: bool = True):
        self.Settings(window_size, lamb, filter_type, warmup)  # the checks
        self.window_size, self.lamb = window_size, lamb
        self.filter_type, self.warmup = filter_type, warmup
        self.ring: dict[int, Tensor] = {}   # key -> (window_size, *shape) raw gradients
        self.total: dict[int, Tensor] = {}  # key -> sum of the kept gradients
        self.count: dict[int, int] = {}     # key -> how many gradients it has seen
        self.device_position = False        # see use_device_position
        self._position: Tensor | None = None

    @classmethod
    def describe(cls, fc):
        return f"MA window {fc['window_size']} λ={fc['lamb']:g}" + (" (sum)" if fc.get("filter_type") == "sum" else "")

    def _filter(self, keys, grads, amplify):
        import torch

        w = self.window_size
        for k, g in zip(keys, grads):
            if k not in self.ring:
                self.ring[k] = g.new_zeros((w, *g.shape))
                self.total[k] = torch.zeros_like(g)
                self.count[k] = 0
        # Parameters are grouped by how many gradients they have seen: each group shares a ring
        # slot, a divisor and whether its window is full. Usually there is one group.
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(self.count[k], []).append(i)
        if self.device_position and len(groups) > 1:
            raise RuntimeError("MA with its position on the device needs every parameter to take part in each step")
        for count, idx in groups.items():
            slot = count % w
            ks = [keys[i] for i in idx]
            gs = [grads[i] for i in idx]
            totals = [self.total[k] for k in ks]
            if self.device_position:  # the same copies and sums, at a position read from the device
                position = self._device_slot(gs[0].device, slot)
                if count >= w:  # the oldest gradient leaves the window
                    torch._foreach_sub_(totals, [self.ring[k].index_select(0, position).squeeze(0) for k in ks])
                for k, g in zip(ks, gs):
                    self.ring[k].index_copy_(0, position, g.unsqueeze(0))
                position.add_(1).remainder_(w)
            else:
                slots = [self.ring[k][slot] for k in ks]
                if count >= w:  # the oldest gradient leaves the window
                    torch._foreach_sub_(totals, slots)
                torch._foreach_copy_(slots, gs)
            torch._foreach_add_(totals, gs)
            if slot == w - 1:  # once per lap, re-sum the window so rounding in the running sum cannot drift
                for k, t in zip(ks, totals):
                    torch.sum(self.ring[k], dim=0, out=t)
            for k in ks:
                self.count[k] = count + 1
            kept = min(count + 1, w)
            if not amplify or self.lamb == 0 or (self.warmup and kept < w):
                continue
            scale = self.lamb / kept if self.filter_type == "mean" else self.lamb
            torch._foreach_add_(gs, totals, alpha=scale)

    def use_device_position(self) -> None:
        """Keep the ring position in a device tensor, advanced on the device, so a captured step replays at the
        right slot (grokrun.graphs). The numbers are the same: the same copies, sums and differences."""
        self.device_position = True

    def _device_slot(self, device, slot: int) -> Tensor:
        import torch

        if self._position is None:  # from the host's count, once; the device keeps it from there
            self._position = torch.full((1,), slot, dtype=torch.long, device=device)
        return self._position

    def state_dict(self):
        return {"window_size": self.window_size, "lamb": self.lamb, "filter_type": self.filter_type,
                "warmup": self.warmup, "ring": dict(self.ring), "total": dict(self.total),
                "count": dict(self.count)}

    def load_state_dict(self, state):
        self.window_size, self.lamb = state["window_size"], state["lamb"]
        self.filter_type, self.warmup = state["filter_type"], state["warmup"]
        self.ring, self.total, self.count = dict(state["ring"]), dict(state["total"]), dict(state["count"])
        self._position = None  # (device mode) recreated from the count

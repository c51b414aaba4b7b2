"""Gradient filters that amplify the slow part of the gradient (Grokfast, Lee et al. 2024).

Call between ``loss.backward()`` and ``optimizer.step()``:

    f = EMAFilter(alpha=0.98, lamb=2.0)
    f.apply(model.parameters())     # rewrites each .grad in place

Per parameter with gradient g_t:

- EMA: mu_1 = g_1; mu_t = alpha * mu_{t-1} + (1 - alpha) * g_t; g_t <- g_t + lamb * mu_t.
- MA:  keep the last ``window_size`` raw gradients; g_t <- g_t + lamb * mean(kept) (or their sum).
  With ``warmup`` nothing changes until the window is full; without it the mean is over what is kept.

State is keyed by a parameter's position in the iterable given to ``apply``, so pass the parameters in
the same order every call (``model.parameters()`` does). A parameter whose grad is None is skipped and
keeps its state; one with ``requires_grad=False`` is ignored. Work is done with multi-tensor
(``torch._foreach_*``) ops, one kernel launch per op for all parameters, and MA keeps a ring buffer
and a running sum so its cost does not grow with the window.

``gradfilter_ema`` and ``gradfilter_ma`` at the bottom are drop-in replacements for the functions of
the published Grokfast snippet: same arguments, same returned state to feed back, same numbers.

Filters work elementwise, so one filter over seeds stacked into one model (a leading seed axis on every
parameter) filters each seed as if it ran alone; ``seed_axes`` says where that axis lies in the state.

A new filter is one ``GradFilter`` subclass and one entry in ``FILTERS``: it then works with every task
(``--filter NAME``), takes its settings from the filter flags (``--lamb``, ``--alpha``, ...) with its own
``defaults`` where a task has no published preset for it, and is named in titles and legends by its
``describe``. torch is imported on first use, so reading the registry costs nothing.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from torch import Tensor, nn


def _with_grads(parameters: Iterable[Tensor]) -> tuple[list[int], list[Tensor]]:
    """Positions and grads of the parameters that take part in this step."""
    keys, grads = [], []
    for i, p in enumerate(parameters):
        if p.requires_grad and p.grad is not None:
            keys.append(i)
            grads.append(p.grad)
    return keys, grads


class GradFilter:
    """No filtering: the baseline. Subclasses override ``_filter`` (and, with state, the state methods)."""

    name = "none"
    defaults: dict[str, Any] = {}
    """Filter settings (FilterConfig fields) this filter uses where no published preset sets them."""
    seed_axes: dict[str, int] = {}
    """For seeds trained as one stacked model: the state_dict entries that hold a tensor per parameter, and
    which axis of those tensors runs over the seeds (the parameter's own first axis, or after the filter's
    own leading axes). Other entries are the same for every seed. Lets a checkpoint be split per seed."""

    @classmethod
    def from_config(cls, fc) -> GradFilter:
        """The filter a run's FilterConfig describes."""
        return cls()

    @classmethod
    def describe(cls, fc: dict[str, Any]) -> str:
        """The filter and its settings, for titles and legends, from a saved config's filter section."""
        if cls.name == "none":
            return "no filter"
        return " ".join([cls.name, *(f"{k}={fc[k]:g}" if isinstance(fc.get(k), float) else f"{k}={fc.get(k)}"
                                     for k in cls.defaults)])

    stacked_seeds = False
    """Set by the engine when the parameters are seeds stacked on a leading axis (grokrun.stacking): a filter
    that reduces over a parameter (⊥Grad's projection) then reduces over each seed's slice."""

    def set_stacked_seeds(self, stacked: bool) -> None:
        self.stacked_seeds = stacked

    def apply(self, parameters: Iterable[Tensor], amplify: bool = True) -> None:
        """Update the filter with this step's grads and, if ``amplify``, add lamb * (slow part) to them.

        ``amplify=False`` updates the state only (used to withhold amplification for the first steps).
        """
        keys, grads = _with_grads(parameters)
        if grads:
            self._filter(keys, grads, amplify)

    def _filter(self, keys: list[int], grads: list[Tensor], amplify: bool) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # --- CUDA graphs (grokrun.graphs): a step captured once is replayed; what the host decides is frozen in it

    def graph_key(self, amplify: bool) -> Any:
        """What this step's ``apply`` decides on the host (branches, Python numbers): steps with equal keys can
        replay one captured graph. None: this step must run eagerly (state not yet set up, or a filter that
        does not declare its host decisions: subclasses opt in by overriding this)."""
        return amplify if type(self) is GradFilter else None

    def host_state(self) -> Any:
        """The host-side part of the state that ``apply`` changes (capturing records the device work but runs the
        Python, so the capture is undone with ``load_host_state``)."""
        return None

    def load_host_state(self, state: Any) -> None:
        pass

    def advance(self) -> None:
        """After a replay: change the host-side state as ``apply`` would have."""


class EMAFilter(GradFilter):
    """Exponential moving average of the gradient, added back with weight ``lamb``."""

    name = "ema"
    defaults = {"alpha": 0.98, "lamb": 2.0}
    seed_axes = {"mu": 0}

    def __init__(self, alpha: float = 0.98, lamb: float = 2.0):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        if lamb < 0:
            raise ValueError(f"lamb must be >= 0, got {lamb}")
        self.alpha, self.lamb = alpha, lamb
        self.mu: dict[int, Tensor] = {}

    @classmethod
    def from_config(cls, fc):
        return cls(alpha=fc.alpha, lamb=fc.lamb)

    @classmethod
    def describe(cls, fc):
        return f"EMA α={fc['alpha']:g} λ={fc['lamb']:g}"

    def _filter(self, keys, grads, amplify):
        import torch

        new = [(k, g) for k, g in zip(keys, grads) if k not in self.mu]
        old = [(k, g) for k, g in zip(keys, grads) if k in self.mu]
        for k, g in new:  # mu_1 = g_1
            self.mu[k] = g.detach().clone()
        if old:
            # mu <- alpha*mu + (1-alpha)*g as one fused pass with no temporaries: on CPU this is 3-4x
            # cheaper than separate products, and rounds differently from them only in the last bit.
            # (gradfilter_ema below keeps the published snippet's rounding exactly.)
            torch._foreach_lerp_([self.mu[k] for k, _ in old], [g for _, g in old], 1.0 - self.alpha)
        if amplify and self.lamb != 0:
            torch._foreach_add_(grads, [self.mu[k] for k in keys], alpha=self.lamb)

    def graph_key(self, amplify):
        return (amplify and self.lamb != 0) if self.mu else None  # (the first step creates the averages)

    def state_dict(self):
        return {"alpha": self.alpha, "lamb": self.lamb, "mu": dict(self.mu)}

    def load_state_dict(self, state):
        self.alpha, self.lamb = state["alpha"], state["lamb"]
        self.mu = dict(state["mu"])


class MAFilter(GradFilter):
    """Moving average (or sum) of the last ``window_size`` gradients, added back with weight ``lamb``.

    A ring buffer of the raw gradients and a running sum: each step adds the new gradient and
    subtracts the one that leaves the window, so the cost is O(1) in the window size.
    """

    name = "ma"
    defaults = {"window_size": 100, "lamb": 5.0}
    seed_axes = {"ring": 1, "total": 0}  # ring: (window, *parameter shape)

    def __init__(self, window_size: int = 100, lamb: float = 5.0, filter_type: str = "mean",
                 warmup: bool = True):
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if lamb < 0:
            raise ValueError(f"lamb must be >= 0, got {lamb}")
        if filter_type not in ("mean", "sum"):
            raise ValueError(f"filter_type must be 'mean' or 'sum', got {filter_type!r}")
        self.window_size, self.lamb = window_size, lamb
        self.filter_type, self.warmup = filter_type, warmup
        self.ring: dict[int, Tensor] = {}   # key -> (window_size, *shape) raw gradients
        self.total: dict[int, Tensor] = {}  # key -> sum of the kept gradients
        self.count: dict[int, int] = {}     # key -> how many gradients it has seen
        self.device_position = False        # see use_device_position
        self._position: Tensor | None = None

    @classmethod
    def from_config(cls, fc):
        return cls(window_size=fc.window_size, lamb=fc.lamb, filter_type=fc.filter_type, warmup=fc.warmup)

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

    def graph_key(self, amplify):
        counts = set(self.count.values())
        if not self.device_position or len(counts) != 1 or min(counts) < self.window_size:
            return None  # filling the window, the divisor and whether it amplifies change at every step
        count = counts.pop()
        return (amplify and self.lamb != 0, count % self.window_size == self.window_size - 1)

    def host_state(self):
        return dict(self.count)

    def load_host_state(self, state):
        self.count = dict(state)

    def advance(self):
        self.count = {k: c + 1 for k, c in self.count.items()}

    def state_dict(self):
        return {"window_size": self.window_size, "lamb": self.lamb, "filter_type": self.filter_type,
                "warmup": self.warmup, "ring": dict(self.ring), "total": dict(self.total),
                "count": dict(self.count)}

    def load_state_dict(self, state):
        self.window_size, self.lamb = state["window_size"], state["lamb"]
        self.filter_type, self.warmup = state["filter_type"], state["warmup"]
        self.ring, self.total, self.count = dict(state["ring"]), dict(state["total"]), dict(state["count"])
        self._position = None  # (device mode) recreated from the count


class OrthoGradFilter(GradFilter):
    """⊥Grad (Prieto et al. 2025, "Grokking at the edge of numerical stability"): per parameter tensor w with
    gradient g, g <- g_perp * |g| / |g_perp| where g_perp = g - (<w, g> / <w, w>) w: the component that would
    only scale the weights (and, with them, the logits) is removed, at the gradient's norm. Stateless."""

    name = "orthograd"
    EPS = 1e-30  # as published: guards a zero weight and a gradient parallel to its weight

    @classmethod
    def describe(cls, fc):
        return "⊥Grad"

    def apply(self, parameters, amplify=True):
        import torch

        if not amplify:
            return
        for p in parameters:
            if not p.requires_grad or p.grad is None:
                continue
            w, g = p.detach(), p.grad
            dims = tuple(range(1 if self.stacked_seeds else 0, g.dim()))  # per seed where stacked
            if not dims:  # a stacked scalar: each seed's parameter is a single number, parallel to itself
                continue
            along = (w * g).sum(dims, keepdim=True) / ((w * w).sum(dims, keepdim=True) + self.EPS)
            perp = g - along * w
            scale = torch.linalg.vector_norm(g, dim=dims, keepdim=True) / (
                torch.linalg.vector_norm(perp, dim=dims, keepdim=True) + self.EPS)
            g.copy_(perp * scale)

    def graph_key(self, amplify):
        return amplify


class Chain(GradFilter):
    """Several filters applied in order (``--filter orthograd,ema``): each sees the gradients the one before
    it left. State, seed axes, graph keys and host state are each filter's, side by side."""

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

    def use_device_position(self):
        for f in self.filters:
            if hasattr(f, "use_device_position"):
                f.use_device_position()

    def graph_key(self, amplify):
        keys = tuple(f.graph_key(amplify) for f in self.filters)
        return None if any(k is None for k in keys) else keys

    def host_state(self):
        return [f.host_state() for f in self.filters]

    def load_host_state(self, state):
        for f, s in zip(self.filters, state):
            f.load_host_state(s)

    def advance(self):
        for f in self.filters:
            f.advance()


FILTERS: dict[str, type[GradFilter]] = {"none": GradFilter, "ema": EMAFilter, "ma": MAFilter,
                                        "orthograd": OrthoGradFilter}


def parts(name: str) -> list[str]:
    """The filters a --filter value names, in order: "orthograd,ema" -> ["orthograd", "ema"]."""
    return [p.strip() for p in name.split(",")]


def check_name(name: Any) -> None:
    """UserError unless ``name`` is a registered filter or several, comma-separated ("none" stands alone)."""
    from grokrun.errors import UserError

    names = parts(name) if isinstance(name, str) else [repr(name)]  # (a config file's list or number: unknown)
    unknown = next((n for n in names if n not in FILTERS), None)
    if unknown is not None or (len(names) > 1 and "none" in names) or len(set(names)) < len(names):
        what = f"unknown filter {unknown!r}" if unknown is not None else f"the filters {name!r} cannot be combined"
        raise UserError(f"{what}; choose one of: {', '.join(FILTERS)}, or several in order, comma-separated "
                        "(orthograd,ema)")


def defaults_of(name: str) -> dict[str, Any]:
    """The filter settings the named filters use where no preset sets them (the later filter's win)."""
    merged: dict[str, Any] = {}
    for n in parts(name):
        merged.update(FILTERS[n].defaults)
    return merged


def make(fc) -> GradFilter:
    """The filter a run's FilterConfig names: one, or a Chain of several."""
    names = parts(fc.name)
    if len(names) == 1:
        return FILTERS[names[0]].from_config(fc)
    return Chain([FILTERS[n].from_config(fc) for n in names])


# --- the filters in any training loop ---------------------------------------------------------------------

STATE_KEY = "grokrun_filter"  # where an attached filter's state sits in optimizer.state_dict()


class Attached:
    """A filter attached to an optimizer (``attach``); ``detach()`` takes it off again."""

    def __init__(self, optimizer, grad_filter: GradFilter):
        self.optimizer, self.filter = optimizer, grad_filter
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_state_dict_post_hook(self._save),
            optimizer.register_load_state_dict_pre_hook(self._load),
        ]
        optimizer._grokrun_filter = self

    def _params(self) -> list:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _before_step(self, optimizer, args, kwargs) -> None:
        self.filter.apply(self._params())

    def _save(self, optimizer, state: dict) -> dict:
        state[STATE_KEY] = self.filter.state_dict()
        return state

    def _load(self, optimizer, state: dict) -> dict:
        state = dict(state)
        saved = state.pop(STATE_KEY, None)
        if saved is not None:
            device = next((p.device for p in self._params()), None)
            self.filter.load_state_dict(_to_device(saved, device))
        return state

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if getattr(self.optimizer, "_grokrun_filter", None) is self:
            del self.optimizer._grokrun_filter


def attach(optimizer, grad_filter: GradFilter) -> Attached:
    """Filter the gradients at every ``optimizer.step()``, before the update, in any training loop:

        attach(optimizer, EMAFilter(alpha=0.98, lamb=2.0))
        loss.backward(); optimizer.step()            # the step filters first

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


def _to_device(state: Any, device) -> Any:
    if device is None:
        return state
    if hasattr(state, "to") and hasattr(state, "device"):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to_device(v, device) for k, v in state.items()}
    return state


def describe_variant(config: dict[str, Any]) -> str:
    """How a run was trained, from its saved config: "EMA α=0.98 λ=2 · adam wd 0.005"."""
    f, o = config.get("filter", {}), config.get("optim", {})
    name = f.get("name", "none")
    text = " then ".join(FILTERS[n].describe(f) if n in FILTERS else n for n in parts(name))
    if name != "none" and f.get("start"):
        text += f" from step {f['start']:,}"
    return f"{text} · {o.get('name', '?')} wd {o.get('weight_decay', 0):g}"


# --- drop-in replacements for the published Grokfast functions -----------------------------------

def gradfilter_ema(m: nn.Module, grads: dict[str, Tensor] | None = None, alpha: float = 0.98,
                   lamb: float = 2.0) -> dict[str, Tensor]:
    """Grokfast's ``gradfilter_ema``: returns the EMA state (by parameter name) to pass back next call."""
    import torch

    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad and p.grad is not None]
    if grads is None:
        grads = {}
    # The published function seeds the average with g and then applies the update to it, so on the
    # first call mu = g*alpha + g*(1-alpha) (equal to g up to rounding); do the same for the same numbers.
    for n, p in named:
        if n not in grads:
            grads[n] = p.grad.detach().clone()
    mus = [grads[n] for n, _ in named]
    gs = [p.grad for _, p in named]
    if mus:
        torch._foreach_mul_(mus, alpha)
        torch._foreach_add_(mus, torch._foreach_mul(gs, 1.0 - alpha))
        torch._foreach_add_(gs, torch._foreach_mul(mus, lamb))
    return grads


def gradfilter_ma(m: nn.Module, grads: dict[str, deque] | None = None, window_size: int = 100,
                  lamb: float = 5.0, filter_type: str = "mean", warmup: bool = True,
                  trigger: bool = False) -> dict[str, deque]:
    """Grokfast's ``gradfilter_ma``: returns the window (by parameter name, a deque each) to pass back.

    As published, ``trigger=True`` only fills the window, and only while ``warmup`` is on; the sum is
    re-added from the deque every call, in the same order, so the numbers match to the last bit and the
    cost grows with the window. ``MAFilter`` does the same filtering in O(1) per step.
    """
    if filter_type not in ("mean", "sum"):
        raise ValueError(f"filter_type must be 'mean' or 'sum', got {filter_type!r}")
    if grads is None:
        grads = {}
    for n, p in m.named_parameters():
        if not (p.requires_grad and p.grad is not None):
            continue
        window = grads.setdefault(n, deque(maxlen=window_size))
        window.append(p.grad.detach().clone())
        if not warmup or (len(window) == window_size and not trigger):
            avg = sum(window)
            if filter_type == "mean":
                avg = avg / len(window)
            p.grad.add_(avg * lamb)
    return grads

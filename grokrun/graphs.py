"""The training step as CUDA graphs: captured once per shape of step, then replayed (``--cuda-graph``).

    graphs = StepGraphs(compute, grad_filter, warmup_steps)   # compute(idx, amplify) -> bad: the step's device work
    bad = graphs.step(step, idx, amplify)                     # instead of compute(idx, amplify)

A step of these small models is mostly kernel launches and Python; a graph launches all of them at once.
What a step decides on the host is frozen in a graph, so a graph is kept per *key*: the batch's shape (the
last batch of an epoch is smaller) and the filter's host decisions (``graph_key``: whether it amplifies; for
MA whether this step closes a lap of its window). A key is captured the second time it occurs, the first
running eagerly (which initializes whatever a first call sets up), and never before the learning-rate warmup
has ended: the rate is a Python number inside the optimizer, constant from then on. The caller steps the
learning-rate scheduler on the host after each step, so checkpoints hold its state.

What keeps a replay exact: the batch indices are copied into the graph's input tensor; Adam and AdamW run
with ``capturable=True`` (their step counts and bias corrections live on the device); MA keeps its ring
position on the device (``MAFilter.use_device_position``); the gradients, activations and the returned
divergence flag live in each graph's private memory pool. Evaluation, checkpoints and the batch order stay
outside. Dropping finished seeds from a stack makes new parameters, so the graphs are captured again.

A filter's part in capture, the only code that needs it: what ``apply`` decides on the host (``graph_key``:
steps with equal keys replay one graph; None: run this step eagerly), the host-side state ``apply`` changes
(``host_state`` / ``load_host_state``: capturing runs the Python once, which is then undone) and how a replay
changes it (``advance``). The built-in filters' rules are below; a plugin filter opts in by defining those four
methods itself (without them its runs are not captured, and ``--cuda-graph on`` says so).

Status: this path has not yet run on a GPU (see docs/stacking-and-graphs.md); ``--cuda-graph auto`` is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from grokrun.errors import UserError
from grokrun.filters import Chain, EMAFilter, GradFilter, MAFilter, OrthoGradFilter


# --- each filter's host decisions ------------------------------------------------------------------------

def _ma_key(f: MAFilter, amplify: bool):
    counts = set(f.count.values())
    if not f.device_position or len(counts) != 1 or min(counts) < f.window_size:
        return None  # filling the window, the divisor and whether it amplifies change at every step
    return (amplify and f.lamb != 0, counts.pop() % f.window_size == f.window_size - 1)


_KEYS: dict[type, Callable[[Any, bool], Any]] = {
    GradFilter: lambda f, amplify: amplify,
    OrthoGradFilter: lambda f, amplify: amplify,
    EMAFilter: lambda f, amplify: (amplify and f.lamb != 0) if f.mu else None,  # the first step creates the averages
    MAFilter: _ma_key,
}


def capturable(f) -> bool:
    """Whether the filter declares its host decisions (built in, or a plugin's own ``graph_key``)."""
    if isinstance(f, Chain):
        return all(capturable(g) for g in f.filters)
    return type(f) in _KEYS or callable(getattr(f, "graph_key", None))


def graph_key(f, amplify: bool) -> Any:
    """What this step's ``apply`` decides on the host; None: this step runs eagerly."""
    if isinstance(f, Chain):
        keys = tuple(graph_key(g, amplify) for g in f.filters)
        return None if any(k is None for k in keys) else keys
    if type(f) in _KEYS:
        return _KEYS[type(f)](f, amplify)
    own = getattr(f, "graph_key", None)
    return own(amplify) if callable(own) else None


def host_state(f) -> Any:
    if isinstance(f, Chain):
        return [host_state(g) for g in f.filters]
    if isinstance(f, MAFilter):
        return dict(f.count)
    return f.host_state() if hasattr(f, "host_state") else None


def load_host_state(f, state: Any) -> None:
    if isinstance(f, Chain):
        for g, s in zip(f.filters, state):
            load_host_state(g, s)
    elif isinstance(f, MAFilter):
        f.count = dict(state)
    elif hasattr(f, "load_host_state"):
        f.load_host_state(state)


def advance(f) -> None:
    """After a replay: change the host-side state as ``apply`` would have."""
    if isinstance(f, Chain):
        for g in f.filters:
            advance(g)
    elif isinstance(f, MAFilter):
        f.count = {k: c + 1 for k, c in f.count.items()}
    elif hasattr(f, "advance"):
        f.advance()


def _device_positions(f) -> None:
    for g in (f.filters if isinstance(f, Chain) else [f]):
        if hasattr(g, "use_device_position"):
            g.use_device_position()


# --- the graphs ------------------------------------------------------------------------------------------

def wanted(choice: str, device: torch.device, grad_filter, task) -> bool:
    """Whether a run replays its step as CUDA graphs: ``on`` asks for it (UserError where it cannot be), ``off``
    and, until the path has been checked on a GPU, ``auto`` do not."""
    if choice != "on":
        return False
    if device.type != "cuda":
        raise UserError(f"--cuda-graph on needs a CUDA device (this run is on {device.type}); use --cuda-graph off")
    if not task.capturable:
        raise UserError(f"--cuda-graph on: the {type(task).__name__} step cannot be captured (Task.capturable); "
                        "use --cuda-graph off")
    if not capturable(grad_filter):
        raise UserError(f"--cuda-graph on: the {grad_filter.name} filter does not declare its host decisions "
                        "(graph_key, see grokrun/graphs.py), so its step cannot be captured; use --cuda-graph off")
    return True


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Adam and AdamW keep their step counts on the device, so a replay advances them (others have none)."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    idx: torch.Tensor  # the input the graph reads: this step's batch indices are copied into it
    bad: torch.Tensor  # its output: per seed, whether the loss or gradient norm was non-finite


class StepGraphs:
    """``compute(idx, amplify)``, replayed from CUDA graphs where it can be (see the module's docstring)."""

    def __init__(self, compute: Callable[[torch.Tensor, bool], torch.Tensor], grad_filter, warmup_steps: int):
        self.graphs: dict[tuple, _Graph] = {}
        self.seen: set[tuple] = set()
        self.ready_after = max(warmup_steps + 1, 3)  # the rate is constant from step warmup + 1
        self.reset(compute, grad_filter)

    def reset(self, compute: Callable[[torch.Tensor, bool], torch.Tensor], grad_filter) -> None:
        """New parameters (seeds dropped from the stack), so a new step and filter: every graph is captured again."""
        self.compute, self.filter = compute, grad_filter
        self.graphs.clear()
        self.seen.clear()
        _device_positions(grad_filter)

    def step(self, step: int, idx: torch.Tensor, amplify: bool) -> torch.Tensor:
        """Training step ``step`` on the batch ``idx``: replayed, captured, or run eagerly."""
        decided = graph_key(self.filter, amplify)
        key = (tuple(idx.shape), decided)
        if decided is None or step <= self.ready_after or key not in self.seen:
            self.seen.add(key)
            return self.compute(idx, amplify)  # eagerly: the first of its key sets up what a first call does
        graph = self.graphs.get(key) or self._capture(key, idx, amplify)
        graph.idx.copy_(idx)
        self.replay(graph)
        advance(self.filter)
        return graph.bad

    def _capture(self, key: tuple, idx: torch.Tensor, amplify: bool) -> _Graph:
        """Record one step (nothing runs while recording; the caller replays it for the step itself)."""
        static_idx = idx.clone()
        host = host_state(self.filter)
        graph = self.new_graph()
        compute = self.compute
        bad = self.record(graph, lambda: compute(static_idx, amplify))
        load_host_state(self.filter, host)  # recording ran the filter's Python once: undo it
        self.graphs[key] = _Graph(graph, static_idx, bad)
        return self.graphs[key]

    # The CUDA calls, one place each (a test replaces them to check the bookkeeping above on a CPU).

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def record(self, graph: Any, step_fn) -> torch.Tensor:
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            return step_fn()

    def replay(self, graph: _Graph) -> None:
        graph.graph.replay()

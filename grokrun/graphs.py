"""The training step as CUDA graphs: captured once per shape of step, then replayed (``--cuda-graph``).

    graphs = StepGraphs(run)          # run: a grokrun.engine.Run on a CUDA device
    bad = graphs.step(step)           # instead of run.step(step)

A step of these small models is mostly kernel launches and Python; a graph launches all of them at once.
What a step decides on the host is frozen in a graph, so a graph is kept per *key*: the batch's shape (the
last batch of an epoch is smaller) and the filter's host decisions (``GradFilter.graph_key``: whether it
amplifies; for MA whether this step closes a lap of its window). A key is captured the second time it
occurs, the first running eagerly (which initializes whatever a first call sets up), and never before the
learning-rate warmup has ended: the rate is a Python number inside the optimizer, constant from then on.
The learning-rate scheduler still steps on the host after each replay, so checkpoints hold its state.

What keeps a replay exact: the batch indices are copied into the graph's input tensor; Adam and AdamW run
with ``capturable=True`` (their step counts and bias corrections live on the device); MA keeps its ring
position on the device (``MAFilter.use_device_position``); the gradients, activations and the returned
divergence flag live in each graph's private memory pool. Evaluation, checkpoints and the batch order stay
outside. Dropping finished seeds from a stack makes new parameters, so the graphs are captured again.

Status: this path has not yet run on a GPU (see the README); ``--cuda-graph auto`` therefore means off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grokrun.errors import UserError
from grokrun.filters import GradFilter

def wanted(choice: str, device: torch.device, grad_filter: GradFilter, task) -> bool:
    """Whether a run replays its step as CUDA graphs: ``on`` asks for it (UserError where it cannot be), ``off``
    and, until the path has been checked on a GPU, ``auto`` do not."""
    if choice != "on":
        return False
    if device.type != "cuda":
        raise UserError(f"--cuda-graph on needs a CUDA device (this run is on {device.type}); use --cuda-graph off")
    if not task.capturable:
        raise UserError(f"--cuda-graph on: the {type(task).__name__} step cannot be captured (Task.capturable); "
                        "use --cuda-graph off")
    if type(grad_filter).graph_key is GradFilter.graph_key and type(grad_filter) is not GradFilter:
        raise UserError(f"--cuda-graph on: the {grad_filter.name} filter does not declare its host decisions "
                        "(GradFilter.graph_key), so its step cannot be captured; use --cuda-graph off")
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
    """Run.step, replayed from CUDA graphs where it can be (see the module's docstring)."""

    def __init__(self, run):
        self.run = run
        self.graphs: dict[tuple, _Graph] = {}
        self.seen: set[tuple] = set()
        self.ready_after = max(run.cfg.optim.warmup_steps + 1, 3)  # the rate is constant from step warmup + 1
        if hasattr(run.grad_filter, "use_device_position"):
            run.grad_filter.use_device_position()

    def reset(self) -> None:
        """New parameters (seeds dropped from the stack): every graph is captured again."""
        self.graphs.clear()
        self.seen.clear()
        if hasattr(self.run.grad_filter, "use_device_position"):
            self.run.grad_filter.use_device_position()

    def step(self, step: int) -> torch.Tensor:
        run = self.run
        idx = run.next_batch()
        amplify = step > run.cfg.filter.start
        decided = run.grad_filter.graph_key(amplify)
        key = (tuple(idx.shape), decided)
        if decided is None or step <= self.ready_after or key not in self.seen:
            self.seen.add(key)
            bad = run.compute(idx, amplify)  # eagerly: the first of its key sets up what a first call does
            run.scheduler.step()
            return bad
        graph = self.graphs.get(key) or self._capture(key, idx, amplify)
        graph.idx.copy_(idx)
        self.replay(graph)
        run.grad_filter.advance()
        run.scheduler.step()
        return graph.bad

    def _capture(self, key: tuple, idx: torch.Tensor, amplify: bool) -> _Graph:
        """Record one step (nothing runs while recording; the caller replays it for the step itself)."""
        run = self.run
        static_idx = idx.clone()
        host = run.grad_filter.host_state()
        graph = self.new_graph()
        bad = self.record(graph, lambda: run.compute(static_idx, amplify))
        run.grad_filter.load_host_state(host)  # recording ran the filter's Python once: undo it
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

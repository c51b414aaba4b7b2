"""The model(s) a run trains: one task's module, or several seeds' modules stacked into one.

    models = Single(task)                    # one run: the task's own module, as published
    models = Stacked(tasks, shared_data)     # N seeds: every parameter gets a leading seed axis

Both give the engine the same handful of operations, each returning one value per seed: ``losses`` (the
seeds' training losses on their own batches), ``grad_norms`` (clipping each seed by its own norm),
``evaluate`` and ``weight_norms``. ``Stacked`` runs the task's ``objective`` and ``score`` under
``torch.func.vmap`` over ``functional_call`` of one module template: one kernel per layer for all seeds.

Adam, AdamW, SGD and the gradient filters are elementwise, so one optimizer and one filter over the
stacked parameters are N independent runs: each seed keeps its own moments and filter state in its slice.
Per seed, only the initial weights, the data split and the batch order differ, each drawn exactly as a
run of that seed alone draws it. The functions at the bottom cut a stacked state into per-seed states
(checkpoints are written per seed, in the format of a single run) and stack them back.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from grokrun.models import vmappable
from grokrun.noise import noisy
from grokrun.tasks.base import Task


def _norms(tensors: list[Tensor], per_seed: bool) -> Tensor:
    """L2 norm of all ``tensors`` together, as torch.nn.utils.get_total_norm (the norm of the per-tensor norms);
    with ``per_seed``, one norm per slice of the leading seed axis."""
    if not per_seed:
        return torch.nn.utils.get_total_norm(tensors).reshape(1)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.flatten(1), dim=1) for t in tensors]),
                                     dim=0)


class Single:
    """One run: the task's module."""

    stacked = False

    def __init__(self, task: Task, weight_noise: float = 0.0):
        self.task, self.model, self.n = task, task.model, 1
        self.names, self.params = map(list, zip(*self.model.named_parameters()))
        self.weight_noise = weight_noise

    def batch(self, idxs: list[Tensor]) -> Tensor:
        return idxs[0]

    def losses(self, idx: Tensor) -> Tensor:
        if self.weight_noise:  # the loss at noisy weights (grokrun.noise), its gradient reaching the weights
            state = {**noisy(dict(zip(self.names, self.params)), self.weight_noise), **dict(self.model.named_buffers())}
            model = lambda *args: functional_call(self.model, state, args)  # noqa: E731
            return self.task.objective(model, self.task.data["train"], idx).reshape(1)
        return self.task.loss(idx).reshape(1)

    def train_penalty(self, idx: Tensor, regularizer) -> Tensor:
        """The regularizer's estimate on the training examples ``idx`` (grokrun.regularizers)."""
        f, x = self.task.vector_input(self.model, self.task.data["train"][0][idx])
        return regularizer(f, x).reshape(1)

    def penalty(self, regularizer) -> Tensor:
        """The regularizer's exact value, averaged over the training set."""
        rows = self.task.data["train"][0]
        f, x = self.task.vector_input(self.model, rows)
        return (regularizer.exact(f, x) / len(rows)).reshape(1)

    def grad_norms(self, clip: float) -> Tensor:
        """The gradient's norm before clipping; with ``clip``, grads rescaled to at most that norm (as
        torch.nn.utils.clip_grad_norm_)."""
        if clip:
            return torch.nn.utils.clip_grad_norm_(self.params, clip).reshape(1)
        return _norms([p.grad for p in self.params if p.grad is not None], per_seed=False)

    def evaluate(self, split: str) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Per seed: mean loss, accuracy (None without one), share of collapsed examples (None where not counted)."""
        loss, acc, collapse = self.task.evaluate(split)
        acc = acc if self.task.has_accuracy else None
        collapse = collapse if self.task.counts_collapse else None
        return tuple(None if t is None else t.reshape(1) for t in (loss, acc, collapse))

    def weight_norms(self) -> Tensor:
        return _norms(self.params, per_seed=False)

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def state(self, i: int) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load(self, states: list[dict[str, Tensor]]) -> None:
        self.model.load_state_dict(states[0])


class Stacked:
    """N seeds of one task as one model: each parameter is the seeds' parameters stacked on a leading axis.

    ``shared_data``: every seed has the same data (MNIST's first N images), held once; otherwise each seed's
    split is stacked too (modular arithmetic draws its split from the seed). The tasks' own modules and data
    are released once stacked.
    """

    stacked = True

    def __init__(self, tasks: list[Task], shared_data: bool):
        self.task = tasks[0]
        for t in tasks:
            if any(p.dim() == 0 for p in t.model.parameters()):
                raise ValueError("a model with 0-dim parameters cannot be stacked")  # (none of ours has one)
        params, buffers = stack_module_state([t.model for t in tasks])
        self.names = list(params)
        self.params = [params[n] for n in self.names]
        self.buffers = buffers
        self.n = len(tasks)
        self.template = vmappable(copy.deepcopy(tasks[0].model).to("meta"))
        self.data_axis = None if shared_data else 0
        self.data = {split: (tasks[0].data[split] if shared_data else
                             tuple(torch.stack(ts) for ts in zip(*(t.data[split] for t in tasks))))
                     for split in tasks[0].data}
        self.eval_chunk = max(1, self.task.eval_chunk // self.n)  # evaluation memory as for one run
        for t in tasks:
            t.model, t.data = None, None

    def _state(self) -> dict[str, Tensor]:
        return {**dict(zip(self.names, self.params)), **self.buffers}

    def _model(self, state: dict[str, Tensor]):
        """One seed's model, for the task's functions, inside vmap."""
        return lambda *args: functional_call(self.template, state, args)

    def batch(self, idxs: list[Tensor]) -> Tensor:
        return torch.stack(idxs)

    def losses(self, idx: Tensor) -> Tensor:
        def seed_loss(state, data, i):
            return self.task.objective(self._model(state), data, i)

        return vmap(seed_loss, in_dims=(0, self.data_axis, 0))(self._state(), self.data["train"], idx)

    def grad_norms(self, clip: float) -> Tensor:
        with_grad = [p for p in self.params if p.grad is not None]
        norms = _norms([p.grad for p in with_grad], per_seed=True)
        if clip:  # per seed, as clip_grad_norm_: scale by clip / (norm + 1e-6) where that is below 1
            scale = (clip / (norms + 1e-6)).clamp(max=1.0)
            for p in with_grad:
                p.grad.mul_(scale.view(-1, *[1] * (p.dim() - 1)).to(p.grad.dtype))
        return norms

    def evaluate(self, split: str) -> tuple[Tensor, Tensor | None, Tensor | None]:
        def seed_eval(state, x, y):
            return self.task.measure(self._model(state), x, y, self.eval_chunk)

        axis = self.data_axis
        loss, acc, collapse = vmap(seed_eval, in_dims=(0, axis, axis))(self._state(), *self.data[split])
        return loss, acc if self.task.has_accuracy else None, collapse if self.task.counts_collapse else None

    def weight_norms(self) -> Tensor:
        return _norms(self.params, per_seed=True)

    def train(self, mode: bool = True) -> None:
        self.template.train(mode)

    def state(self, i: int) -> dict[str, Tensor]:
        """Seed ``i``'s state_dict, as its module alone would give it."""
        return {name: t[i].detach().clone() for name, t in self._state().items()}

    def load(self, states: list[dict[str, Tensor]]) -> None:
        with torch.no_grad():
            for name, t in self._state().items():
                t.copy_(torch.stack([s[name] for s in states]))

    def select(self, keep: list[int]) -> Stacked:
        """The seeds ``keep`` only, as new parameters (for a new optimizer); the others are dropped."""
        other = copy.copy(self)
        index = torch.tensor(keep, device=self.params[0].device)
        other.params = [p.detach()[index].clone().requires_grad_(p.requires_grad) for p in self.params]
        other.buffers = {n: b[index].clone() for n, b in self.buffers.items()}
        if self.data_axis is not None:
            other.data = {split: tuple(t[index] for t in ts) for split, ts in self.data.items()}
        other.n = len(keep)
        other.eval_chunk = max(1, self.task.eval_chunk // other.n)
        return other


# --- per-seed states -------------------------------------------------------------------------------------

def split_optimizer(state: dict[str, Any], params: list[Tensor]) -> list[dict[str, Any]]:
    """A torch optimizer's state_dict over stacked parameters, as one state_dict per seed: an entry shaped as
    its parameter is cut along the seed axis; others (Adam's step count) are the same for every seed."""
    n = params[0].shape[0]
    per_seed = [{"state": {}, "param_groups": copy.deepcopy(state["param_groups"])} for _ in range(n)]
    for key, entries in state["state"].items():
        shape = params[key].shape
        for i in range(n):
            per_seed[i]["state"][key] = {name: v[i].clone() if _stacked(v, shape) else _copy(v)
                                         for name, v in entries.items()}
    for extra, value in state.items():  # a hook's entry (DecayToInit's initial weights): a tensor per parameter
        if extra in ("state", "param_groups"):
            continue
        for i in range(n):
            per_seed[i][extra] = ([t[i].clone() for t in value] if _per_parameter(value, params, stacked=True)
                                  else _copy(value))
    return per_seed


def stack_optimizer(states: list[dict[str, Any]], params: list[Tensor]) -> dict[str, Any]:
    """The inverse of split_optimizer."""
    stacked: dict[str, Any] = {"state": {}, "param_groups": copy.deepcopy(states[0]["param_groups"])}
    for key, entries in states[0]["state"].items():
        shape = params[key].shape[1:]
        stacked["state"][key] = {name: torch.stack([s["state"][key][name] for s in states])
                                 if _stacked(v, shape) else _copy(v) for name, v in entries.items()}
    for extra, value in states[0].items():
        if extra in ("state", "param_groups"):
            continue
        stacked[extra] = ([torch.stack([s[extra][j] for s in states]) for j in range(len(value))]
                          if _per_parameter(value, params, stacked=False) else _copy(value))
    return stacked


def _per_parameter(value: Any, params: list[Tensor], stacked: bool) -> bool:
    """Whether a state entry is a list of one tensor per parameter, shaped as it (per seed, or stacked)."""
    return (isinstance(value, list) and len(value) == len(params)
            and all(isinstance(t, Tensor) and t.shape == (p.shape if stacked else p.shape[1:])
                    for t, p in zip(value, params)))


def split_filter(state: dict[str, Any], axes: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """A gradient filter's state over stacked parameters, per seed (see GradFilter.seed_axes; a Chain's axes
    are its filters' axes, by position)."""
    _check_axes(state, axes)
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, v in state.items():
        axis = axes.get(name)
        for i in range(n):
            if isinstance(axis, dict):
                out[i][name] = split_filter(v, axis, n)[i]
            elif axis is not None:
                out[i][name] = {k: t.select(axis, i).clone() for k, t in v.items()}
            else:
                out[i][name] = _copy(v)
    return out


def stack_filter(states: list[dict[str, Any]], axes: dict[str, Any]) -> dict[str, Any]:
    """The inverse of split_filter."""
    _check_axes(states[0], axes)
    stacked = {}
    for name, v in states[0].items():
        axis = axes.get(name)
        if isinstance(axis, dict):
            stacked[name] = stack_filter([s[name] for s in states], axis)
        elif axis is not None:
            stacked[name] = {k: torch.stack([s[name][k] for s in states], dim=axis) for k in v}
        else:
            stacked[name] = _copy(v)
    return stacked


def _check_axes(state: dict[str, Any], axes: dict[str, int]) -> None:
    for name, v in state.items():
        if name not in axes and isinstance(v, dict) and any(isinstance(t, Tensor) for t in v.values()):
            raise ValueError(f"the filter's state entry {name!r} holds tensors but is not in its seed_axes")


def _stacked(v: Any, shape: torch.Size) -> bool:
    return isinstance(v, Tensor) and v.dim() > 0 and v.shape == shape


def _copy(v: Any) -> Any:
    return v.clone() if isinstance(v, Tensor) else copy.deepcopy(v)

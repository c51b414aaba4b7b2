"""What the engine needs from a task, and the batch sampler that tasks share.

A task is one module in ``grokrun/tasks/`` that declares everything about itself:

    NAME        its name on the command line (--task NAME)
    Options     a dataclass of its settings; each field's docstring is its --help (one flag per field)
    DEFAULTS    shared settings it changes ({"optim.name": "adamw", ...}), as its published script has them
    PRESETS     per filter, the published settings ({"ema": {"filter.alpha": 0.8, ...}}); "none" is the
                baseline. Where a filter has no preset, the filter's own defaults apply.
    validate(options)            raise UserError naming the flag and the valid range
    describe(options) -> str     what is learned, for titles ("modular: x·y mod 97, 50% train")
    build_model(options)         the model alone, on the CPU, without data
    build(cfg, device, dtype)    the Task below: data on the device and the model, drawn from cfg.seed

and one line in ``grokrun.tasks.TASKS``. Importing a task module must not import torch (the CLI reads
every task's Options to make its flags, and --help should be instant): torch is imported where a run is
built, inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

from grokrun.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


def reads_vectors(options) -> None:
    """A task module's ``no_vector_input`` where its model always reads a float vector per example (an MLP on
    pixels, bits or features): no reason to refuse --reg (grokrun.regularizers)."""
    return None


def check_at_most(limits: dict[str, tuple[int, int]], why: str = "") -> None:
    """Upper bounds of a task's sizes, {flag: (value, limit)}: a slip of the keyboard is an error, not a model or
    a table that fills the memory."""
    for flag, (value, limit) in limits.items():
        if value > limit:
            raise UserError(f"--{flag} must be <= {limit:,}{why}, got {value:,}")


def train_count(frac: float, n: int) -> int:
    """How many of ``n`` examples a training fraction takes: round(frac * n), at least one and at most n - 1, so
    both splits have an example (rounded at 6 decimals first, so 0.3 * 10 is 3 and not 2.9999...)."""
    return max(1, min(n - 1, int(round(frac * n, 6))))


def fork_global_generator() -> "torch.Generator":
    """A CPU generator that continues the global one from here, without disturbing it afterwards.

    The Grokfast scripts draw each epoch's shuffle from the global generator after the split; a fork
    replays those draws while staying independent of anything else that uses the global generator.
    """
    import torch

    generator = torch.Generator()
    generator.set_state(torch.get_rng_state())
    return generator


class EpochBatches:
    """Index batches as slices of a fresh permutation each epoch, on the data's device.

    The last batch of an epoch may be smaller, as in the Grokfast scripts. Each shuffle is drawn by
    ``generator`` on the CPU, so a seed gives the same batch order on every device; on CUDA it is
    copied from pinned memory without blocking, so the loop still never waits for the GPU.
    """

    def __init__(self, n: int, batch_size: int, device: torch.device, generator: torch.Generator):
        self.n, self.batch_size, self.device = n, min(batch_size, n), device
        self.generator = generator
        self.perm: Tensor | None = None
        self.pos = 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": None if self.perm is None else self.perm.cpu(),
                "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.device)
        self.pos = state["pos"]

    def next(self) -> Tensor:
        if self.perm is None or self.pos >= self.n:
            import torch

            shuffle = torch.randperm(self.n, generator=self.generator)
            if self.device.type == "cuda":
                shuffle = shuffle.pin_memory().to(self.device, non_blocking=True)
            else:
                shuffle = shuffle.to(self.device)
            # The Grokfast scripts shuffle the already shuffled data each epoch; composing the
            # permutations gives the same order (any one epoch is a uniform shuffle either way).
            self.perm = shuffle if self.perm is None else self.perm[shuffle]
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


def at_least_float32(t: Tensor) -> Tensor:
    """A bfloat16 output (autocast) as float32 for its loss; float32 and float64 ones as they are."""
    import torch

    return t.to(torch.promote_types(t.dtype, torch.float32))


def sum_over_chunks(x: Tensor, y: Tensor, chunk: int, score) -> tuple[Tensor, ...]:
    """Totals of ``score(x_chunk, y_chunk) -> (summed loss, correct count, collapsed count)`` over a whole split, a
    chunk at a time so evaluation memory stays bounded; the sums stay on the device (float64 loss, integer
    counts). Written without in-place updates, so it also runs under torch.func.vmap (one seed of a stack)."""
    import torch

    totals = None
    for i in range(0, len(x), chunk):
        parts = score(x[i:i + chunk], y[i:i + chunk])
        if totals is None:
            totals = [torch.zeros((), device=x.device, dtype=torch.float64 if k == 0 else torch.long)
                      for k in range(len(parts))]
        totals = [t + p for t, p in zip(totals, parts)]
    return tuple(totals)


class Task:
    """A model, its data on the device, a training loss and an evaluation.

    A task states its loss and its evaluation as functions of a model, so that the engine can call them
    with the task's module (one run) or with one seed's slice of a stacked model (seeds trained together):

    ``objective(model, data, idx)``: the mean training loss of the examples ``idx`` (from
    ``batches.next()``) of the training tensors ``data``. ``score(model, x, y)``: (summed loss, correct
    count or None) over a chunk of a split. ``loss(idx)`` and ``evaluate(split)`` apply them to the task's
    own module; ``evaluate`` returns (mean loss, accuracy or None) over the whole "train" or "val" split as
    0-dim tensors, so the engine decides when to sync; the engine calls it under torch.no_grad(). A task
    whose data does not fit this form (graphs) overrides ``loss`` and ``evaluate`` instead.
    """

    model: nn.Module
    batches: EpochBatches
    data: dict[str, tuple[Tensor, ...]]
    has_accuracy: bool = True
    batchable: bool = False
    """Whether seeds can be trained together as one stacked model: ``objective`` and ``score`` run under
    torch.func.vmap, every seed's data has the same shapes, and training draws nothing from the global
    random generator (each seed's batch order has its own)."""
    capturable: bool = True
    """Whether a training step can be captured as a CUDA graph (grokrun.graphs): no wait for the device inside
    it and the same shapes every step (QM9's batches gather graphs on the host)."""
    counts_collapse: bool = False
    """Whether the training loss is a softmax (or StableMax) cross-entropy, whose collapse the training set's
    evaluation counts (the softmax_collapse column)."""
    loss_units: int = 1
    """Outputs per example that the loss averages over (MNIST's MSE: 10), so evaluation reports its mean."""
    eval_chunk: int = 16384
    """Examples scored at once in an evaluation, per seed."""
    extra_splits: dict[str, str] = {}
    """metrics.csv columns of the task's own: column -> a split of ``data`` whose accuracy each evaluation writes
    there (XOR's perturbed test set)."""

    def vector_input(self, model, rows: Tensor) -> tuple:
        """(f, x): the model as a function of a float vector per example, and the training rows as such vectors,
        for penalties on the input-output map (grokrun.regularizers); a task module whose model has none says
        why in ``no_vector_input(options)`` and that run is refused."""
        return model, rows

    def objective(self, model, data: tuple[Tensor, ...], idx: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(summed loss, correct count, collapsed count) over a chunk; the last counts the examples whose float32
        softmax cross-entropy is exactly 0 (grokrun.losses.Loss.collapsed), a zero where ``counts_collapse`` is off."""
        raise NotImplementedError

    def loss(self, idx: Tensor) -> Tensor:
        return self.objective(self.model, self.data["train"], idx)

    def evaluate(self, split: str) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return self.measure(self.model, *self.data[split])

    def measure(self, model, x: Tensor, y: Tensor, chunk: int | None = None
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(mean loss, accuracy, share of collapsed examples) of ``model`` over the examples (x, y), ``chunk`` at a
        time; the accuracy and the share are tensors even where the task has none (the engine drops them)."""
        loss_sum, correct, collapsed = sum_over_chunks(x, y, chunk or self.eval_chunk,
                                                       lambda xb, yb: self.score(model, xb, yb))
        return loss_sum / (len(x) * self.loss_units), correct.double() / len(x), collapsed.double() / len(x)

    def data_tensors(self) -> list[Tensor]:
        """The tensors that hold the split data; a checkpoint stores their fingerprint."""
        return [t for split in sorted(self.data) for t in self.data[split]]

    def fingerprint(self) -> str:
        """sha256 of the split data, so a run is never resumed on other data."""
        import torch

        h = hashlib.sha256()
        for t in self.data_tensors():
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


class ClassificationTask(Task):
    """A task whose model gives scores over classes, trained on a registered loss (grokrun.losses: --loss ce,
    stablemax, mse or a plugin's) in the --softmax-dtype precision: its objective and score, for the tasks that
    share them (modular, parity, mnist). A subclass calls ``use_loss`` when it is built."""

    counts_collapse = True
    loss_fn = None
    loss_dtype: torch.dtype | None = None

    def use_loss(self, name: str, loss_dtype: torch.dtype | None, outputs: int = 1) -> None:
        """The registered loss ``name`` and its precision (None: the logits' own, at least float32); ``outputs``
        per example, over which a per-output loss (MSE) averages too."""
        from grokrun.losses import LOSSES

        self.loss_fn, self.loss_dtype = LOSSES[name], loss_dtype
        self.counts_collapse = self.loss_fn.counts_collapse
        self.loss_units = outputs if self.loss_fn.per_output else 1

    def objective(self, model, data: tuple[Tensor, Tensor], idx: Tensor) -> Tensor:
        x, y = data
        return self.loss_fn(model(x[idx]), y[idx], self.loss_dtype)

    forward_chunk: int = 512
    """On a CPU, examples through the model at once inside an evaluation chunk (the loss still sums the whole
    chunk at once). A row of a matrix product does not depend on how many rows there are, so the logits are the
    same, bitwise, and a pass over the 4,656 examples of a modular split takes ~100 ms instead of ~180 (one
    thread): the activations of 512 examples stay in the caches."""

    def score(self, model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        step = self.forward_chunk
        if x.device.type == "cpu" and len(x) > step:
            import torch

            logits = torch.cat([self.logits(model, x[i:i + step]) for i in range(0, len(x), step)])
        else:
            logits = self.logits(model, x)
        return (self.loss_fn(logits, y, self.loss_dtype, reduction="sum"), (logits.argmax(-1) == y).sum(),
                self.loss_fn.collapsed(logits, y))

    def logits(self, model, x: Tensor) -> Tensor:
        """The model's outputs as the evaluation scores them."""
        return model(x)

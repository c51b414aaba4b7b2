"""What the engine needs from a task, and the batch sampler that tasks share."""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor, nn


def stream_seed(seed: int, stream: str) -> int:
    """An independent seed for one purpose ("split", "batches") of a run's seed.

    Two generators given the same seed replay the same random numbers: a split drawn with
    randperm(N) and batches drawn with randperm(N/2) from the same seed come out correlated, which
    measurably slowed memorization here. Hashing the purpose in keeps the streams apart.
    """
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class EpochBatches:
    """Index batches as slices of a fresh seeded permutation each epoch, made on the data's device.

    The last batch of an epoch may be smaller, as in the Grokfast scripts. No host sync: the permutation
    is drawn on the device with a generator that lives there.
    """

    def __init__(self, n: int, batch_size: int, device: torch.device, seed: int):
        self.n, self.batch_size, self.device = n, min(batch_size, n), device
        self.generator = torch.Generator(device=device).manual_seed(stream_seed(seed, "batches"))
        self.perm: Tensor | None = None
        self.pos = 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def next(self) -> Tensor:
        if self.perm is None or self.pos >= self.n:
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


class Task:
    """A model, its data on the device, a training loss and an evaluation.

    ``loss(idx)`` returns the mean training loss of the examples ``idx`` (from ``batches.next()``).
    ``evaluate(split)`` returns (mean loss, accuracy or None) over the whole "train" or "val" split,
    as 0-dim tensors, so the engine decides when to sync.
    """

    model: nn.Module
    batches: EpochBatches
    title: str = ""
    has_accuracy: bool = True

    def loss(self, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def evaluate(self, split: str) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

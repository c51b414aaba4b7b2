"""Algorithmic tables (Power et al. 2022) and the decoder transformer that groks them.

    grokrun train --task modular --op mul --p 97 --train-frac 0.5

Each example is the sequence [a, op, b, =] with answer c = a∘b; loss and accuracy are on the answer,
predicted at the '=' position. The whole table lives on the device.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grokrun.errors import UserError
from grokrun.tasks.base import ClassificationTask, EpochBatches, check_at_most, fork_global_generator, train_count

if TYPE_CHECKING:
    import torch
    from torch import Tensor

NAME = "modular"


@dataclass
class Options:
    op: str = "mul"
    """Operation: mul | add | sub | div | x2+y2 | x2+xy+y2 | x2+xy+y2+x | x3+xy | x3+xy2+y | s5 | s5conj | s5aba."""
    p: int = 97
    """Modulus (prime for div); unused by the s5 operations."""
    train_frac: float = 0.5
    """Fraction of the table used for training, in (0, 1)."""
    arch: str = "decoder"
    """decoder (the Grokfast transformer) | mlp (one-hot a and b concatenated, --layers hidden layers of --width, one logit per symbol: Prieto et al.'s MLP)."""
    layers: int = 2
    """Decoder layers (mlp: hidden layers)."""
    width: int = 128
    """Model width."""
    heads: int = 4
    """Attention heads."""
    mlp_width: int = 0
    """Hidden width of the decoder blocks' MLP; 0 = 4 x --width."""
    activation: str = "gelu"
    """gelu | relu: the decoder MLP's (or the mlp's) nonlinearity."""
    init: str = "torch"
    """The decoder's initialization: torch (each layer's default; embeddings N(0, --embed-std²)) | nanda (Nanda et al.'s: every weight N(0, 1/width), the head N(0, 1/vocab), biases zero)."""
    embed_std: float = 1.0
    """Standard deviation of the decoder's token and position embeddings under --init torch (torch's N(0, 1); Nanda et al. use 1/sqrt(width))."""
    layernorm: bool = True
    """Decoder LayerNorms (--no-layernorm: none, as Nanda et al.'s one-layer model)."""
    block: str = "grokfast"
    """grokfast (as published: the stream is replaced by its LayerNorm before attention) | prenorm (textbook pre-LN)."""
    loss: str = "ce"
    """ce (softmax cross-entropy) | stablemax (cross-entropy over StableMax, Prieto et al. 2025) | mse (squared error on one-hot targets, Gromov's quadratic network)."""


# The Grokfast modular script's settings are the code's defaults (snapshots aside); the published runs differ
# from them so.
LOSSES = ("ce", "stablemax", "mse")  # (grokrun.losses)
DEFAULTS: dict = {"train.snapshots": "log"}  # weights for grokrun analyze
PRESETS = {
    "none": {"train.max_steps": 100_000},  # the baseline groks at ~40k steps
    "ema": {"filter.alpha": 0.98, "filter.lamb": 2.0, "optim.weight_decay": 0.005},
    "ma": {"filter.window_size": 100, "filter.lamb": 5.0, "optim.weight_decay": 0.01},
}


def _inverse(y: int, p: int) -> int:
    return pow(y, -1, p)


# op -> (answer of a, b mod p, whether b skips 0). Grokfast's "mul" runs b over 1..p-1.
MODULAR_OPS = {
    "add": (lambda a, b, p: (a + b) % p, False),
    "sub": (lambda a, b, p: (a - b) % p, False),
    "mul": (lambda a, b, p: (a * b) % p, True),
    "div": (lambda a, b, p: (a * _inverse(b, p)) % p, True),
    "x2+y2": (lambda a, b, p: (a * a + b * b) % p, False),
    "x2+xy+y2": (lambda a, b, p: (a * a + a * b + b * b) % p, False),
    "x2+xy+y2+x": (lambda a, b, p: (a * a + a * b + b * b + a) % p, False),
    "x3+xy": (lambda a, b, p: (a ** 3 + a * b) % p, False),
    "x3+xy2+y": (lambda a, b, p: (a ** 3 + a * b * b + b) % p, False),
}
NEEDS_PRIME = ("div",)
BLOCKS = ("grokfast", "prenorm")  # see models.Block
ARCHS = ("decoder", "mlp")
ACTIVATIONS = ("gelu", "relu", "quadratic")  # models.ACTIVATIONS, named here so --help needs no torch (a test checks)
INITS = ("torch", "nanda")  # models.Decoder's


def _compose(x: tuple, y: tuple) -> tuple:
    """(x∘y)(i) = x(y(i))."""
    return tuple(x[i] for i in y)


def _invert(x: tuple) -> tuple:
    inv = [0] * len(x)
    for i, xi in enumerate(x):
        inv[xi] = i
    return tuple(inv)


PERMUTATION_OPS = {
    "s5": lambda x, y: _compose(x, y),
    "s5conj": lambda x, y: _compose(_compose(x, y), _invert(x)),
    "s5aba": lambda x, y: _compose(_compose(x, y), x),
}
OPS = (*MODULAR_OPS, *PERMUTATION_OPS)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def validate(cfg: Options) -> None:
    if cfg.op not in OPS:
        raise UserError(f"unknown op {cfg.op!r}; choose one of: {', '.join(OPS)}")
    if cfg.p < 2:
        raise UserError(f"--p must be >= 2, got {cfg.p}")
    check_at_most({"p": (cfg.p, 2_000)}, " (the table has p² equations)")
    if cfg.op in NEEDS_PRIME and not _is_prime(cfg.p):
        raise UserError(f"--op {cfg.op} needs a prime --p (every b != 0 must have an inverse), got {cfg.p}")
    if not 0.0 < cfg.train_frac < 1.0:
        raise UserError(f"--train-frac must be in (0, 1), got {cfg.train_frac}")
    if cfg.arch not in ARCHS:
        raise UserError(f"unknown arch {cfg.arch!r}; choose one of: {', '.join(ARCHS)}")
    for flag, value in (("layers", cfg.layers), ("width", cfg.width), ("heads", cfg.heads)):
        if value < 1:
            raise UserError(f"--{flag} must be >= 1, got {value}")
    if cfg.mlp_width < 0:
        raise UserError(f"--mlp-width must be >= 0 (0 = 4 x --width), got {cfg.mlp_width}")
    check_at_most({"layers": (cfg.layers, 64), "width": (cfg.width, 4096), "heads": (cfg.heads, cfg.width),
                   "mlp-width": (cfg.mlp_width, 16384)})
    if not 0.0 < cfg.embed_std <= 100.0:
        raise UserError(f"--embed-std must be in (0, 100], got {cfg.embed_std}")
    if cfg.init not in INITS:
        raise UserError(f"unknown init {cfg.init!r}; choose one of: {', '.join(INITS)}")
    if cfg.arch != "decoder" and cfg.init != "torch":
        raise UserError(f"--init {cfg.init} initializes the decoder; --arch {cfg.arch} takes torch's (drop --init)")
    if cfg.init == "nanda" and cfg.embed_std != 1.0:
        raise UserError("--embed-std applies to --init torch; --init nanda draws the embeddings N(0, 1/width): "
                        "drop --embed-std")
    if cfg.activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {cfg.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
    if cfg.block not in BLOCKS:
        raise UserError(f"unknown block {cfg.block!r}; choose one of: {', '.join(BLOCKS)}")
    if cfg.arch == "decoder" and cfg.width % cfg.heads:
        raise UserError(f"--width must be a multiple of --heads, got {cfg.width} and {cfg.heads}")


_OP_TEXT = {"mul": "x·y", "add": "x+y", "sub": "x−y", "div": "x/y", "s5": "x∘y in S5",
            "s5conj": "x∘y∘x⁻¹ in S5", "s5aba": "x∘y∘x in S5"}


def describe(cfg: Options) -> str:
    """"modular: x·y mod 97, 50% train"."""
    text = _OP_TEXT.get(cfg.op) or re.sub(r"([xy])([23])", lambda m: m[1] + "²³"[int(m[2]) - 2], cfg.op)
    if cfg.op not in PERMUTATION_OPS:
        text += f" mod {cfg.p}"
    arch = f", MLP {cfg.layers}×{cfg.width}" if cfg.arch == "mlp" else ""
    return f"modular: {text}, {cfg.train_frac:.0%} train{arch}" + (", StableMax" if cfg.loss == "stablemax" else "")


def symbols(op: str, p: int) -> int:
    """How many values a and b range over: the residues mod p, or the 120 permutations of S5."""
    return 120 if op in PERMUTATION_OPS else p


def table(op: str, p: int) -> tuple[Tensor, Tensor, int]:
    """Every equation of the operation: inputs (N, 4) as [a, op, b, =], answers (N,), and vocab size.

    Symbols are 0..n-1 (residues, or the 120 permutations of S5 in lexicographic order), then the
    '=' token n and the op token n + 1, the ids of the published script.
    """
    import torch

    if op in PERMUTATION_OPS:
        perms = list(itertools.permutations(range(5)))
        index = {perm: i for i, perm in enumerate(perms)}
        n = len(perms)
        f = PERMUTATION_OPS[op]
        rows = [(i, j, index[f(x, y)]) for (i, x), (j, y) in itertools.product(enumerate(perms), repeat=2)]
    else:
        f, skip_zero = MODULAR_OPS[op]
        n = p
        rows = [(a, b, f(a, b, p)) for a in range(p) for b in range(1 if skip_zero else 0, p)]
    abc = torch.tensor(rows, dtype=torch.long)
    x = torch.stack([abc[:, 0], torch.full_like(abc[:, 0], n + 1), abc[:, 1], torch.full_like(abc[:, 0], n)], 1)
    return x, abc[:, 2], n + 2


def build_model(cfg: Options):
    """The decoder for this table (vocabulary: the symbols, '=' and the op token), or the pair MLP."""
    from grokrun.models import Decoder, PairMLP

    if cfg.arch == "mlp":
        return PairMLP(symbols(cfg.op, cfg.p), cfg.width, cfg.layers, cfg.activation)
    return Decoder(symbols(cfg.op, cfg.p) + 2, cfg.width, cfg.layers, cfg.heads, block=cfg.block,
                   mlp_width=cfg.mlp_width or None, activation=cfg.activation, layernorm=cfg.layernorm,
                   embed_std=cfg.embed_std, init=cfg.init)


def no_vector_input(cfg: Options) -> str | None:
    """Why --reg cannot take this model's input Jacobian, or None (grokrun.regularizers)."""
    if cfg.arch == "decoder":
        return "the decoder looks its tokens up (no input vector): use --arch mlp (one-hot a and b)"
    return None


class ModularTask(ClassificationTask):
    batchable = True

    def vector_input(self, model, rows):
        """The pair MLP as a function of one-hot(a) ++ one-hot(b) (grokrun.regularizers)."""
        return model.from_vector, model.two_hot(rows)

    def __init__(self, cfg: Options, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype,
                 loss_dtype: torch.dtype | None = None):
        import torch

        x, y, vocab = table(cfg.op, cfg.p)
        # One seeded stream, drawn in the published script's order: the initial weights, the split, then
        # each epoch's batch order. So --seed N starts exactly where the Grokfast script's seed N does.
        torch.manual_seed(seed)
        self.model = build_model(cfg).to(device=device, dtype=dtype)
        order = torch.randperm(len(x))
        # floor(train_frac * N), as the published N // 2; rounded first so 0.29 * 100 gives 29, not 28
        n_train = train_count(cfg.train_frac, len(x))
        self.data = {
            "train": (x[order[:n_train]].to(device), y[order[:n_train]].to(device)),
            "val": (x[order[n_train:]].to(device), y[order[n_train:]].to(device)),
        }
        self.batches = EpochBatches(n_train, batch_size, device, fork_global_generator())
        # (MSE on one-hot targets averages over the model's outputs too, as for MNIST)
        self.use_loss(cfg.loss, loss_dtype, outputs=symbols(cfg.op, cfg.p) if cfg.arch == "mlp" else vocab)


def build(cfg, device: torch.device, dtype: torch.dtype) -> ModularTask:
    """The task for a resolved run config."""
    from grokrun.losses import precision

    return ModularTask(cfg.modular, cfg.seed, cfg.train.batch_size, device, dtype, precision(cfg.train.softmax_dtype))

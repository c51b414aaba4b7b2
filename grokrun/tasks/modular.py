"""Algorithmic tables (Power et al. 2022) and the decoder transformer that groks them.

    grokrun train --task modular --op mul --p 97 --train-frac 0.5

Each example is the sequence [a, op, b, =] with answer c = a∘b; loss and accuracy are on the answer,
predicted at the '=' position. The whole table lives on the device.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokrun.config import ConfigError, ModularConfig
from grokrun.tasks.base import EpochBatches, Task, fork_global_generator, sum_over_chunks


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
BLOCKS = ("grokfast", "prenorm")


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


def validate(cfg: ModularConfig) -> None:
    if cfg.op not in OPS:
        raise ConfigError(f"unknown op {cfg.op!r}; choose one of: {', '.join(OPS)}")
    if cfg.p < 2:
        raise ConfigError(f"--p must be >= 2, got {cfg.p}")
    if cfg.op in NEEDS_PRIME and not _is_prime(cfg.p):
        raise ConfigError(f"--op {cfg.op} needs a prime --p (every b != 0 must have an inverse), got {cfg.p}")
    if not 0.0 < cfg.train_frac < 1.0:
        raise ConfigError(f"--train-frac must be in (0, 1), got {cfg.train_frac}")
    for flag, value in (("layers", cfg.layers), ("width", cfg.width), ("heads", cfg.heads)):
        if value < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {value}")
    if cfg.block not in BLOCKS:
        raise ConfigError(f"unknown block {cfg.block!r}; choose one of: {', '.join(BLOCKS)}")
    if cfg.width % cfg.heads:
        raise ConfigError(f"--width must be a multiple of --heads, got {cfg.width} and {cfg.heads}")


def table(op: str, p: int) -> tuple[Tensor, Tensor, int]:
    """Every equation of the operation: inputs (N, 4) as [a, op, b, =], answers (N,), and vocab size.

    Symbols are 0..n-1 (residues, or the 120 permutations of S5 in lexicographic order), then the
    '=' token n and the op token n + 1, the ids of the published script.
    """
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


class Block(nn.Module):
    """Causal self-attention and GELU MLP, each after a LayerNorm.

    ``prenorm`` is the textbook pre-LN block, x + attn(ln1(x)). ``grokfast`` is the block of the
    published Grokfast decoder, where the stream itself is replaced by ln1(x) before the attention
    residual: h = ln1(x); h + attn(h). Grokfast's numbers were measured with the latter.
    """

    def __init__(self, width: int, heads: int, kind: str = "grokfast"):
        super().__init__()
        self.heads = heads
        self.normed_stream = kind == "grokfast"
        self.ln1 = nn.LayerNorm(width)
        self.ln2 = nn.LayerNorm(width)
        # Initialized as torch's MultiheadAttention, which the Grokfast decoder uses (xavier in-projection,
        # zero biases), and drawing random numbers in its order: the output projection's default init
        # first, then the in-projection. So a seed gives the published script's initial weights.
        self.qkv_weight = nn.Parameter(torch.empty(3 * width, width))
        self.qkv_bias = nn.Parameter(torch.zeros(3 * width))
        self.proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.qkv_weight)
        nn.init.zeros_(self.proj.bias)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        """With ``last_only``, return only the last position: the queries, the attention output and the
        MLP are computed for it alone (keys and values still cover every position)."""
        b, t, c = x.shape
        h = self.ln1(x)
        if self.normed_stream:
            x = h
        if last_only:
            w_q, w_kv = self.qkv_weight.split([c, 2 * c])
            b_q, b_kv = self.qkv_bias.split([c, 2 * c])
            q = F.linear(h[:, -1:], w_q, b_q)
            k, v = F.linear(h, w_kv, b_kv).split(c, dim=-1)
            x = x[:, -1:]
        else:
            q, k, v = F.linear(h, self.qkv_weight, self.qkv_bias).split(c, dim=-1)
        q, k, v = (z.view(b, z.shape[1], self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        # The last position sees every earlier one, so it needs no mask.
        a = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only)
        x = x + self.proj(a.transpose(1, 2).reshape(b, x.shape[1], c))
        return x + self.mlp(self.ln2(x))


class Decoder(nn.Module):
    """Token and learned position embeddings, blocks, final LayerNorm, linear head (no bias).

    Five positions, as published (a, op, b, =, and the answer, whose row is never used), so the
    random draws of the initialization match the published script's.
    """

    def __init__(self, vocab: int, width: int, layers: int, heads: int, seq_len: int = 5,
                 block: str = "grokfast"):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads, block) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the last position only: (batch, vocab)."""
        h = self.tok(x) + self.pos.weight[: x.shape[1]]
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=i == len(self.blocks) - 1)
        return self.head(self.ln_f(h[:, -1]))


class ModularTask(Task):
    def __init__(self, cfg: ModularConfig, seed: int, batch_size: int, device: torch.device,
                 dtype: torch.dtype):
        x, y, vocab = table(cfg.op, cfg.p)
        # One seeded stream, drawn in the published script's order: the initial weights, the split, then
        # each epoch's batch order. So --seed N starts exactly where the Grokfast script's seed N does.
        torch.manual_seed(seed)
        self.model = Decoder(vocab, cfg.width, cfg.layers, cfg.heads, block=cfg.block).to(device=device, dtype=dtype)
        order = torch.randperm(len(x))
        # floor(train_frac * N), as the published N // 2; rounded first so 0.29 * 100 gives 29, not 28
        n_train = max(1, min(len(x) - 1, int(round(cfg.train_frac * len(x), 6))))
        self.data = {
            "train": (x[order[:n_train]].to(device), y[order[:n_train]].to(device)),
            "val": (x[order[n_train:]].to(device), y[order[n_train:]].to(device)),
        }
        self.batches = EpochBatches(n_train, batch_size, device, fork_global_generator())
        name = cfg.op if cfg.op in PERMUTATION_OPS else f"{cfg.op} mod {cfg.p}"
        self.title = f"modular {name}, {cfg.train_frac:g} train"

    def loss(self, idx: Tensor) -> Tensor:
        x, y = self.data["train"]
        return F.cross_entropy(self.model(x[idx]), y[idx])

    @torch.no_grad()
    def evaluate(self, split: str, chunk: int = 16384) -> tuple[Tensor, Tensor]:
        def score(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
            logits = self.model(xb)
            return F.cross_entropy(logits.float(), yb, reduction="sum"), (logits.argmax(-1) == yb).sum()

        x, y = self.data[split]
        loss_sum, correct = sum_over_chunks(x, y, chunk, score)
        return loss_sum / len(x), correct.double() / len(x)


def build(cfg, device: torch.device, dtype: torch.dtype) -> ModularTask:
    """The task for a resolved RunConfig."""
    return ModularTask(cfg.modular, cfg.seed, cfg.train.batch_size, device, dtype)

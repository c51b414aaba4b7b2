"""The architectures grokking is studied on, one class (or builder) each; tasks choose and size them.

    model = Decoder(vocab=99, width=128, layers=2, heads=4)

Plain torch modules with no data attached, so a model can be built from a saved config alone (for
analysis, or to check an initialization). Each task's ``build_model`` calls one of these.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NODE_FEATURES, EDGE_FEATURES = 11, 4  # QM9's atom and bond features, as torch_geometric encodes them
class Quadratic(nn.Module):
    """x -> x², the units of GrokAlign's modular-arithmetic network (one hidden layer of 256)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "quadratic": Quadratic}  # the decoder's and the MLPs' choices


def scale_init(model: nn.Module, factor: float) -> nn.Module:
    """Multiply every initial parameter, biases and embeddings included, by ``factor`` (Omnigrok's large
    initialization, which makes a model memorize first and generalize late)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


# --- low-rank adapters ---------------------------------------------------------------------------------

def _lora_a(rank: int, fan_in: int, like: Tensor) -> Tensor:
    """A's initialization: as an nn.Linear(fan_in, rank) weight (kaiming uniform), on ``like``'s device and dtype."""
    a = torch.empty(rank, fan_in, device=like.device, dtype=like.dtype)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    return a


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trained low-rank update: y = base(x) + scale * B(A(x)), B starting at zero
    (Hu et al. 2021), so the model's function is unchanged until B moves."""

    def __init__(self, base: nn.Linear, rank: int, scale: float):
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(_lora_a(rank, base.in_features, base.weight))
        self.lora_b = nn.Parameter(base.weight.new_zeros(base.out_features, rank))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


def add_lora(model: nn.Module, rank: int, alpha: float | None = None) -> nn.Module:
    """Every weight of ``model`` frozen, and a rank-``rank`` adapter (scale alpha / rank) on each of its linear maps:
    each nn.Linear, and the decoder's in-projection. Only the adapters then train (and decay, and are filtered)."""
    scale = (alpha if alpha is not None else rank) / rank
    widest = max((min(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)),
                 default=None)
    if widest is not None and rank > widest:  # (adapters of more rank than any map has train more than the model)
        from grokrun.errors import UserError

        raise UserError(f"--lora-rank must be at most {widest} for this model (the largest rank of its linear "
                        f"maps), got {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        if isinstance(module, Block):
            module.add_lora(rank, scale)
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, scale))
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}


# --- decoder transformer (modular arithmetic) -----------------------------------------------------------

class Block(nn.Module):
    """Causal self-attention and an MLP (GELU, 4 x width, unless told otherwise), each after a LayerNorm.

    ``prenorm`` is the textbook pre-LN block, x + attn(ln1(x)). ``grokfast`` is the block of the
    published Grokfast decoder, where the stream itself is replaced by ln1(x) before the attention
    residual: h = ln1(x); h + attn(h). Grokfast's numbers were measured with the latter.
    """

    def __init__(self, width: int, heads: int, kind: str = "grokfast", mlp_width: int | None = None,
                 activation: str = "gelu", layernorm: bool = True):
        super().__init__()
        self.heads = heads
        self.normed_stream = kind == "grokfast"
        self.fused_attention = True  # see vmappable()
        # Without LayerNorm (Nanda et al.'s one-layer model) both blocks are x + attn(x), then x + mlp(x).
        self.ln1 = nn.LayerNorm(width) if layernorm else nn.Identity()
        self.ln2 = nn.LayerNorm(width) if layernorm else nn.Identity()
        # Initialized as torch's MultiheadAttention, which the Grokfast decoder uses (xavier in-projection,
        # zero biases), and drawing random numbers in its order: the output projection's default init
        # first, then the in-projection. So a seed gives the published script's initial weights.
        self.qkv_weight = nn.Parameter(torch.empty(3 * width, width))
        self.qkv_bias = nn.Parameter(torch.zeros(3 * width))
        self.proj = nn.Linear(width, width)
        self.qkv_scale = 0.0  # with adapters (add_lora): the scale of qkv_lora_b @ qkv_lora_a
        nn.init.xavier_uniform_(self.qkv_weight)
        nn.init.zeros_(self.proj.bias)
        hidden = mlp_width or 4 * width
        self.mlp = nn.Sequential(nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, width))

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        """With ``last_only``, return only the last position: the queries, the attention output and the
        MLP are computed for it alone (keys and values still cover every position)."""
        b, t, c = x.shape
        h = self.ln1(x)
        if self.normed_stream:
            x = h
        qkv_weight = self.qkv_weight
        if self.qkv_scale:  # the frozen in-projection plus its low-rank adapter
            qkv_weight = qkv_weight + (self.qkv_lora_b @ self.qkv_lora_a) * self.qkv_scale
        if last_only:
            w_q, w_kv = qkv_weight.split([c, 2 * c])
            b_q, b_kv = self.qkv_bias.split([c, 2 * c])
            q = F.linear(h[:, -1:], w_q, b_q)
            k, v = F.linear(h, w_kv, b_kv).split(c, dim=-1)
            x = x[:, -1:]
        else:
            q, k, v = F.linear(h, qkv_weight, self.qkv_bias).split(c, dim=-1)
        q, k, v = (z.view(b, z.shape[1], self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        # The last position sees every earlier one, so it needs no mask.
        if self.fused_attention:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only)
        else:
            a = _attention(q, k, v, causal=not last_only)
        x = x + self.proj(a.transpose(1, 2).reshape(b, x.shape[1], c))
        return x + self.mlp(self.ln2(x))


    def add_lora(self, rank: int, scale: float) -> None:
        """A low-rank adapter on the in-projection (a raw weight, not an nn.Linear): see models.add_lora."""
        width = self.qkv_weight.shape[1]
        self.qkv_lora_a = nn.Parameter(_lora_a(rank, width, self.qkv_weight))
        self.qkv_lora_b = nn.Parameter(self.qkv_weight.new_zeros(3 * width, rank))
        self.qkv_scale = scale


def _attention(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """softmax(q kᵀ / √d + causal mask) v in plain ops: what scaled_dot_product_attention computes, in a form
    torch.func.vmap batches (its fused kernels have no batching rule and fall back to a loop per seed)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        t_q, t_k = scores.shape[-2:]
        allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril(t_k - t_q)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def vmappable(model: nn.Module) -> nn.Module:
    """The same model with the layers whose fused kernels torch.func.vmap cannot batch switched to plain-op
    equivalents (attention), for seeds stacked into one model. The weights and the function are unchanged."""
    for m in model.modules():
        if isinstance(m, Block):
            m.fused_attention = False
    return model


class Decoder(nn.Module):
    """Token and learned position embeddings, blocks, final LayerNorm, linear head (no bias).

    Five positions, as published (a, op, b, =, and the answer, whose row is never used), so the
    random draws of the initialization match the published script's.
    """

    def __init__(self, vocab: int, width: int, layers: int, heads: int, seq_len: int = 5,
                 block: str = "grokfast", mlp_width: int | None = None, activation: str = "gelu",
                 layernorm: bool = True, embed_std: float = 1.0, init: str = "torch"):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(seq_len, width)
        if embed_std != 1.0:  # torch draws N(0, 1); scaled after the draw, so the seed's other draws are unchanged
            with torch.no_grad():
                self.tok.weight.mul_(embed_std)
                self.pos.weight.mul_(embed_std)
        self.blocks = nn.ModuleList(Block(width, heads, block, mlp_width, activation, layernorm)
                                    for _ in range(layers))
        self.ln_f = nn.LayerNorm(width) if layernorm else nn.Identity()
        self.head = nn.Linear(width, vocab, bias=False)
        if init == "nanda":
            self.nanda_init()
        elif init != "torch":
            raise ValueError(f"unknown init {init!r}")

    def nanda_init(self) -> None:
        """Redraw every weight as Nanda et al.'s transformer: N(0, 1/width) for the embeddings, the attention
        and both MLP matrices (the MLP's output matrix too: they scale it by the model's width, not its
        fan-in), N(0, 1/vocab) for the head, zero biases; LayerNorms, where present, stay at (1, 0). Drawn
        after torch's own initialization, in the order of ``parameters()``."""
        width, vocab = self.head.in_features, self.head.out_features
        norms = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        with torch.no_grad():
            for name, p in self.named_parameters():
                if id(p) in norms:
                    continue
                if name.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, 1.0 / math.sqrt(vocab if name == "head.weight" else width))

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the last position only: (batch, vocab)."""
        h = self.tok(x) + self.pos.weight[: x.shape[1]]
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=i == len(self.blocks) - 1)
        return self.head(self.ln_f(h[:, -1]))


# --- MLP on a pair of symbols (modular arithmetic, Prieto et al. 2025) -----------------------------------

class PairMLP(nn.Module):
    """one-hot(a) ++ one-hot(b) -> ``layers`` hidden layers of ``width`` -> one logit per symbol.

    Prieto et al.'s MLP for modular arithmetic. The first layer is an ordinary nn.Linear(2n, width) (its
    initialization is theirs); its product with the two one-hot vectors is computed as the sum of two of its
    columns, which is the same number without multiplying by zeros. Reads a and b from the task's
    [a, op, b, =] rows.
    """

    def __init__(self, symbols: int, width: int, layers: int, activation: str = "relu"):
        super().__init__()
        self.symbols = symbols
        self.first = nn.Linear(2 * symbols, width)
        rest: list[nn.Module] = [ACTIVATIONS[activation]()]
        for _ in range(layers - 1):
            rest += [nn.Linear(width, width), ACTIVATIONS[activation]()]
        rest.append(nn.Linear(width, symbols))
        self.rest = nn.Sequential(*rest)

    def two_hot(self, x: Tensor) -> Tensor:
        """The [a, op, b, =] rows as input vectors one-hot(a) ++ one-hot(b), in the weights' dtype."""
        n = 2 * self.symbols
        return (F.one_hot(x[:, 0], n) + F.one_hot(x[:, 2] + self.symbols, n)).to(self.rest[-1].weight.dtype)

    def from_vector(self, v: Tensor) -> Tensor:
        """Logits of input vectors (batch, 2 × symbols), for an input Jacobian (grokrun.regularizers)."""
        return self.rest(self.first(v))

    def forward(self, x: Tensor) -> Tensor:
        """Logits over the symbols: (batch, symbols)."""
        if not isinstance(self.first, nn.Linear):  # wrapped (a LoRA adapter): the plain product with the two-hot input
            return self.from_vector(self.two_hot(x))
        w = self.first.weight.t()
        return self.rest(F.embedding(x[:, 0], w) + F.embedding(x[:, 2] + self.symbols, w) + self.first.bias)


# --- MLP (MNIST) ---------------------------------------------------------------------------------------

def mlp(depth: int, width: int, activation: str, inputs: int = 28 * 28, outputs: int = 10) -> nn.Sequential:
    """inputs -> width -> ... -> outputs (784 -> ... -> 10 for MNIST): ``depth`` linear maps with the activation
    (a torch.nn class name) between them."""
    layers: list[nn.Module] = []
    d_in = inputs
    for _ in range(depth - 1):
        layers += [nn.Linear(d_in, width), getattr(nn, activation)()]
        d_in = width
    layers.append(nn.Linear(d_in, outputs))
    return nn.Sequential(*layers)


# --- LSTM (IMDb) ---------------------------------------------------------------------------------------

class SentimentLSTM(nn.Module):
    """Embedding, stacked LSTM, and a linear unit with a sigmoid on the last position's output."""

    def __init__(self, vocab: int, embedding_dim: int, width: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, width, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        """P(positive) per review: (batch,)."""
        out, _ = self.lstm(self.embedding(x))  # zero initial state
        return torch.sigmoid(self.fc(out[:, -1])).squeeze(-1)  # only the last position is read


# --- graph network (QM9) -------------------------------------------------------------------------------

def pyg():
    """torch_geometric, imported quietly."""
    with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit; not the user's concern
        warnings.simplefilter("ignore")
        import torch_geometric.datasets
        import torch_geometric.nn
    return torch_geometric


class GraphNet(nn.Module):
    """NNConv(11 -> 32) and NNConv(32 -> 16), each with an edge network 4 -> 32 -> in*out and a ReLU;
    add-pool over each molecule; Linear 16 -> 32, ReLU, Linear 32 -> 1."""

    def __init__(self):
        super().__init__()
        NNConv = pyg().nn.NNConv
        self.conv1 = NNConv(NODE_FEATURES, 32, nn.Sequential(nn.Linear(EDGE_FEATURES, 32), nn.ReLU(),
                                                             nn.Linear(32, NODE_FEATURES * 32)))
        self.conv2 = NNConv(32, 16, nn.Sequential(nn.Linear(EDGE_FEATURES, 32), nn.ReLU(), nn.Linear(32, 32 * 16)))
        self.fc = nn.Linear(16, 32)
        self.out = nn.Linear(32, 1)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, n: int) -> Tensor:
        """One prediction per molecule: (n,)."""
        x = F.relu(self.conv1(x, edge_index, edge_attr))
        x = F.relu(self.conv2(x, edge_index, edge_attr))
        pooled = torch.zeros(n, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, batch, x)  # add-pool
        return self.out(F.relu(self.fc(pooled))).squeeze(-1)


def load_weights(model: nn.Module, run_dir: str) -> None:
    """--init-from: start ``model`` from the final weights of a run directory (its checkpoint.pt, the last of a run
    that ended); UserError naming the first tensor that does not fit."""
    from pathlib import Path

    from grokrun import checkpoint
    from grokrun.errors import UserError

    try:
        weights = checkpoint.load(Path(run_dir))["model"]
    except UserError as e:  # (its own advice is for resuming that run; here it is only read)
        raise UserError(f"--init-from {run_dir}: {str(e).split('; ')[0]}; start from another run") from None
    own = model.state_dict()
    for key in sorted(own.keys() | weights.keys()):
        here, there = own.get(key), weights.get(key)
        if here is None or there is None or here.shape != there.shape:
            def shape(t):
                return "absent" if t is None else tuple(t.shape)
            raise UserError(f"--init-from {run_dir}: its weights do not fit this model ({key} is {shape(there)} "
                            f"there and {shape(here)} here); start from a run of the same task and size")
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(weights[key])

"""The algorithmic tables, the split, and the decoder's last-position shortcut."""

import itertools

import pytest
import torch
from torch import nn

from grokrun.errors import UserError
from grokrun.models import Decoder
from grokrun.tasks.modular import Options as ModularConfig
from grokrun.tasks.modular import OPS, ModularTask, table, validate


def answers(op: str, p: int) -> dict[tuple[int, int], int]:
    x, y, vocab = table(op, p)
    n = vocab - 2
    assert (x[:, 1] == n + 1).all() and (x[:, 3] == n).all()  # [a, op, b, =], the published token ids
    pairs = [(int(a), int(b)) for a, b in x[:, [0, 2]]]
    assert len(set(pairs)) == len(pairs)  # every pair once
    return dict(zip(pairs, y.tolist()))


# (op, p, a, b, answer), each worked out by hand
HAND = [
    ("add", 5, 3, 4, 2), ("sub", 5, 1, 3, 3), ("mul", 5, 3, 4, 2),
    ("div", 5, 3, 4, 2),            # 4^-1 = 4 (mod 5): 3 * 4 = 12 = 2
    ("div", 7, 1, 3, 5),            # 3^-1 = 5 (mod 7)
    ("x2+y2", 7, 2, 3, 6),          # 4 + 9 = 13
    ("x2+xy+y2", 7, 2, 3, 5),       # 4 + 6 + 9 = 19
    ("x2+xy+y2+x", 7, 2, 3, 0),     # 19 + 2 = 21
    ("x3+xy", 7, 2, 3, 0),          # 8 + 6 = 14
    ("x3+xy2+y", 7, 2, 3, 1),       # 8 + 18 + 3 = 29
]


@pytest.mark.parametrize("op,p,a,b,c", HAND)
def test_hand_checked_entries(op, p, a, b, c):
    assert answers(op, p)[(a, b)] == c


@pytest.mark.parametrize("op,p,size", [
    ("add", 5, 25), ("sub", 5, 25), ("mul", 5, 20), ("div", 5, 20), ("x2+y2", 5, 25),
    ("x2+xy+y2", 5, 25), ("x2+xy+y2+x", 5, 25), ("x3+xy", 5, 25), ("x3+xy2+y", 5, 25),
    ("mul", 97, 97 * 96), ("s5", 97, 120 * 120), ("s5conj", 2, 120 * 120), ("s5aba", 2, 120 * 120),
])
def test_table_sizes(op, p, size):
    x, y, vocab = table(op, p)
    assert len(x) == len(y) == size
    n = 120 if op.startswith("s5") else p
    assert vocab == n + 2 and int(y.min()) >= 0 and int(y.max()) < n


def test_every_op_is_listed_and_has_a_table():
    assert set(OPS) == {op for op, *_ in HAND} | {"s5", "s5conj", "s5aba"}


def test_mul_and_div_are_the_same_table_relabelled():
    # x / y takes every residue as often as x * y does: both are Latin squares on 1..p-1 columns
    for op in ("mul", "div"):
        ans = answers(op, 7)
        for b in range(1, 7):
            assert sorted(ans[(a, b)] for a in range(7)) == list(range(7))


def perm_index():
    perms = list(itertools.permutations(range(5)))
    return perms, {q: i for i, q in enumerate(perms)}


def test_s5_composition_by_hand():
    perms, index = perm_index()
    x, y = (1, 0, 2, 3, 4), (0, 2, 1, 3, 4)  # swap(0,1), swap(1,2)
    xy = (1, 2, 0, 3, 4)                       # (x∘y)(i) = x[y[i]]
    s5 = answers("s5", 2)
    assert perms[s5[(index[x], index[y])]] == xy
    identity = index[(0, 1, 2, 3, 4)]
    assert all(s5[(identity, j)] == j for j in range(120))
    conj = answers("s5conj", 2)
    assert all(conj[(i, identity)] == identity for i in range(120))  # x e x^-1 = e
    # x y x^-1 with the two swaps: swap(0,1) swap(1,2) swap(0,1) = swap(0,2)
    assert perms[conj[(index[x], index[y])]] == (2, 1, 0, 3, 4)
    aba = answers("s5aba", 2)
    assert perms[aba[(index[x], identity)]] == (0, 1, 2, 3, 4)  # a swap twice is the identity


def test_split_sizes_disjoint_and_seeded():
    cfg = ModularConfig(p=97, train_frac=0.5)
    t = ModularTask(cfg, seed=0, batch_size=512, device=torch.device("cpu"), dtype=torch.float32)
    tr, va = t.data["train"][0], t.data["val"][0]
    assert len(tr) == len(va) == 4656
    rows = {tuple(r) for r in torch.cat([tr, va]).tolist()}
    assert len(rows) == 97 * 96
    assert t.batches.steps_per_epoch == 10  # 9 full batches of 512 and one of 48
    again = ModularTask(cfg, seed=0, batch_size=512, device=torch.device("cpu"), dtype=torch.float32)
    other = ModularTask(cfg, seed=1, batch_size=512, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(again.data["train"][0], tr)
    assert not torch.equal(other.data["train"][0], tr)
    small = ModularTask(ModularConfig(p=97, train_frac=0.3), 0, 512, torch.device("cpu"), torch.float32)
    assert len(small.data["train"][0]) == 2793  # floor(0.3 * 9312), as the published N // 2
    hundred = ModularTask(ModularConfig(op="add", p=10, train_frac=0.29), 0, 8, torch.device("cpu"), torch.float32)
    assert len(hundred.data["train"][0]) == 29  # not 28: 0.29 * 100 is 28.999... in binary


def test_batches_cover_each_epoch_once():
    cfg = ModularConfig(p=11, op="add", train_frac=0.5)
    t = ModularTask(cfg, seed=0, batch_size=16, device=torch.device("cpu"), dtype=torch.float32)
    n = len(t.data["train"][0])
    for _ in range(2):
        seen = torch.cat([t.batches.next() for _ in range(t.batches.steps_per_epoch)])
        assert sorted(seen.tolist()) == list(range(n))


def full_forward(model: Decoder, x: torch.Tensor) -> torch.Tensor:
    """Every position through every layer, causal mask throughout; the last position's logits."""
    h = model.tok(x) + model.pos.weight[: x.shape[1]]
    for block in model.blocks:
        h = block(h, last_only=False)
    return model.head(model.ln_f(h))[:, -1]


@pytest.mark.parametrize("block", ["grokfast", "prenorm"])
def test_last_position_shortcut_equals_the_full_causal_forward(block):
    torch.manual_seed(0)
    model = Decoder(vocab=13, width=32, layers=3, heads=4, block=block)
    x = torch.randint(0, 13, (64, 4))
    torch.testing.assert_close(model(x), full_forward(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["grokfast", "prenorm"])
def test_causal_mask_hides_the_future(kind):
    torch.manual_seed(0)
    block = Decoder(vocab=13, width=32, layers=1, heads=4, block=kind).blocks[0]
    h = torch.randn(2, 4, 32)
    changed = h.clone()
    changed[:, 3] += torch.randn(32)  # not a constant shift, which LayerNorm would erase
    out, out2 = block(h), block(changed)
    torch.testing.assert_close(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3], out2[:, 3])


@pytest.mark.parametrize("cfg,message", [
    (ModularConfig(op="pow"), "unknown op 'pow'; choose one of: add, sub, mul"),
    (ModularConfig(p=1), "--p must be >= 2"),
    (ModularConfig(op="div", p=12), "--op div needs a prime --p"),
    (ModularConfig(train_frac=1.0), "--train-frac must be in (0, 1)"),
    (ModularConfig(width=130, heads=4), "--width must be a multiple of --heads"),
    (ModularConfig(block="post"), "unknown block 'post'; choose one of: grokfast, prenorm"),
])
def test_validate_rejects(cfg, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(cfg)


class ReferenceBlock(nn.Module):
    """The published Grokfast block, on torch's own MultiheadAttention (sequence first)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        mask = torch.triu(torch.full((len(x), len(x)), float("-inf")), diagonal=1)
        h = self.ln1(x)  # the stream itself is normalized
        h = h + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return h + self.mlp(self.ln2(h))


class ReferenceDecoder(nn.Module):
    def __init__(self, vocab: int, width: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(5, width)
        self.blocks = nn.ModuleList(ReferenceBlock(width, heads) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, x):  # x: (sequence, batch)
        h = self.tok(x) + self.pos.weight[: len(x), None]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))[-1]


def test_seed_gives_the_published_weights_split_and_batch_order():
    """--seed N draws what the Grokfast script's seed N draws, in its order: weights, split, shuffles."""
    task = ModularTask(ModularConfig(), seed=3, batch_size=512, device=torch.device("cpu"), dtype=torch.float32)
    torch.manual_seed(3)
    ref = ReferenceDecoder(99)
    x, _, _ = table("mul", 97)
    train = torch.randperm(len(x))[: len(x) // 2]
    ours = task.model
    pairs = [(ours.tok.weight, ref.tok.weight), (ours.pos.weight, ref.pos.weight),
             (ours.head.weight, ref.head.weight)]
    for b, r in zip(ours.blocks, ref.blocks):
        pairs += [(b.qkv_weight, r.attn.in_proj_weight), (b.qkv_bias, r.attn.in_proj_bias),
                  (b.proj.weight, r.attn.out_proj.weight), (b.proj.bias, r.attn.out_proj.bias),
                  *zip(b.mlp.parameters(), r.mlp.parameters())]
    assert all(torch.equal(a, b) for a, b in pairs)
    batch = x[:256]
    torch.testing.assert_close(ours(batch), ref(batch.T), rtol=1e-4, atol=1e-4)
    assert torch.equal(task.data["train"][0], x[train])
    order = train.clone()
    for _ in range(3):  # each epoch shuffles the previous epoch's order
        order = order[torch.randperm(len(order))]
        got = torch.cat([task.batches.next() for _ in range(task.batches.steps_per_epoch)])
        assert torch.equal(task.data["train"][0][got], x[order])


def test_pair_mlp_is_prieto_et_al_s_mlp_on_the_two_hot_input():
    """The MLP's first layer reads two columns instead of multiplying by the one-hot vectors: the same numbers."""
    from grokrun.models import LoRALinear, PairMLP

    torch.manual_seed(0)
    model = PairMLP(13, 20, 2, "relu").double()
    x, _, _ = table("add", 13)
    two_hot = torch.cat([nn.functional.one_hot(x[:, 0], 13), nn.functional.one_hot(x[:, 2], 13)], 1).double()
    reference = nn.Sequential(model.first, *model.rest)  # nn.Linear(26, 20), ReLU, Linear(20, 20), ReLU, Linear(20, 13)
    assert torch.allclose(model(x), reference(two_hot), rtol=0, atol=1e-12)
    assert [type(m).__name__ for m in model.rest] == ["ReLU", "Linear", "ReLU", "Linear"]
    model.first = LoRALinear(model.first, 2, 1.0)  # wrapped: the plain product, B = 0 the same function
    assert torch.allclose(model(x), reference(two_hot), rtol=0, atol=1e-12)


def test_quadratic_units_square_and_the_pair_mlp_with_them_learns(cli, tmp_path):
    """--activation quadratic (GrokAlign's modular network: one hidden layer of quadratic units on the one-hot
    pair): x -> x², and x + y mod 23 on it fits over 90% of its training set in 400 steps (0.95 here)."""
    from grokrun import models
    from grokrun.models import PairMLP
    from grokrun.tasks import modular

    assert sorted(modular.ACTIVATIONS) == sorted(models.ACTIVATIONS)  # (named twice so that --help needs no torch)
    model = PairMLP(7, 5, 1, "quadratic")
    assert [type(m).__name__ for m in model.rest] == ["Quadratic", "Linear"]
    z = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.equal(model.rest[0](z), z * z)
    result = cli(["train", "--task", "modular", "--arch", "mlp", "--op", "add", "--p", "23", "--train-frac", "0.5",
                  "--width", "256", "--layers", "1", "--activation", "quadratic", "--batch-size", "32",
                  "--optimizer", "adamw", "--lr", "1e-3", "--weight-decay", "0.1", "--max-steps", "400",
                  "--eval-every", "50", "--quiet", "--out", tmp_path, "--name", "q"])
    assert result.exit_code == 0, result.output
    import json

    assert json.loads((tmp_path / "q" / "summary.json").read_text())["final"]["train_acc"] > 0.9  # (chance: 1/23)


def test_decoder_options_for_nanda_et_al_s_model():
    from grokrun.tasks.modular import build_model

    model = build_model(ModularConfig(op="add", p=113, layers=1, width=128, heads=4, mlp_width=512,
                                      activation="relu", layernorm=False))
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    block = model.blocks[0]
    assert block.mlp[0].out_features == 512 and isinstance(block.mlp[1], nn.ReLU)
    x = torch.tensor([[1, 114, 2, 113], [5, 114, 7, 113]])
    assert model(x).shape == (2, 115)
    torch.manual_seed(0)
    plain = build_model(ModularConfig(op="add", p=113))
    torch.manual_seed(0)
    scaled = build_model(ModularConfig(op="add", p=113, embed_std=0.5))  # scaled after the same draws
    assert torch.equal(scaled.tok.weight, plain.tok.weight * 0.5) and torch.equal(scaled.head.weight, plain.head.weight)
    default = build_model(ModularConfig())  # the published decoder is unchanged by the options
    assert sum(isinstance(m, nn.LayerNorm) for m in default.modules()) == 5
    assert default.blocks[0].mlp[0].out_features == 512 and isinstance(default.blocks[0].mlp[1], nn.GELU)


def test_nanda_init_draws_their_scales():
    """Every weight N(0, 1/width) (their MLP output matrix too), the head N(0, 1/vocab), biases zero: the
    sample standard deviations of the model's 65,536-entry matrices are within 2% of those scales, far from
    torch's (uniform with bound 1/sqrt(fan in): 0.051 for fan in 128, 0.026 for the MLP's 512)."""
    from grokrun.tasks.modular import build_model

    nanda = dict(op="add", p=113, layers=1, width=128, heads=4, mlp_width=512, activation="relu", layernorm=False)
    torch.manual_seed(0)
    model = build_model(ModularConfig(**nanda, init="nanda"))
    block = model.blocks[0]
    for w in (block.qkv_weight, block.proj.weight, block.mlp[0].weight, block.mlp[2].weight, model.tok.weight):
        assert w.std().item() == pytest.approx(128 ** -0.5, rel=0.02)
        assert w.mean().abs().item() < 0.01
    assert model.head.weight.std().item() == pytest.approx(115 ** -0.5, rel=0.02)
    for bias in (block.qkv_bias, block.proj.bias, block.mlp[0].bias, block.mlp[2].bias):
        assert not bias.any()
    torch.manual_seed(0)
    torch_init = build_model(ModularConfig(**nanda))
    assert torch_init.blocks[0].mlp[2].weight.std().item() == pytest.approx((3 * 512) ** -0.5, rel=0.02)
    torch.manual_seed(0)  # a seed gives one model
    assert torch.equal(build_model(ModularConfig(**nanda, init="nanda")).head.weight, model.head.weight)
    with_ln = build_model(ModularConfig(init="nanda"))  # LayerNorms keep (1, 0)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
               for m in with_ln.modules() if isinstance(m, nn.LayerNorm))


@pytest.mark.parametrize("cfg,message", [
    (ModularConfig(init="xavier"), "unknown init 'xavier'; choose one of: torch, nanda"),
    (ModularConfig(init="nanda", embed_std=0.1), "--embed-std applies to --init torch"),
    (ModularConfig(arch="mlp", init="nanda"), "--init nanda initializes the decoder"),
    (ModularConfig(arch="cnn"), "unknown arch 'cnn'; choose one of: decoder, mlp"),
    (ModularConfig(activation="tanh"), "unknown activation 'tanh'; choose one of: gelu, relu"),
    (ModularConfig(mlp_width=-1), "--mlp-width must be >= 0"),
    (ModularConfig(embed_std=0.0), "--embed-std must be in"),
])
def test_validate_rejects_model_options(cfg, message):
    with pytest.raises(UserError, match=message):
        validate(cfg)


def test_adam_epsilon_reaches_the_optimizer():
    from grokrun.config import resolve
    from grokrun.optim import make_optimizer

    cfg = resolve(None, {"optim.name": "adamw", "optim.eps": 1e-25})
    optimizer = make_optimizer(cfg.optim, [nn.Parameter(torch.zeros(2))])
    assert optimizer.param_groups[0]["eps"] == 1e-25
    with pytest.raises(UserError, match="--eps must be in"):
        resolve(None, {"optim.eps": 0.0})


def test_squared_error_on_one_hot_targets_averages_over_the_models_outputs():
    """--loss mse (Gromov's quadratic network): the mean over examples and outputs, as torch's MSELoss, so the
    evaluation's loss is on the training loss's scale; the pair MLP has p outputs, the decoder p + 2."""
    import torch.nn.functional as F

    from grokrun.config import resolve
    from grokrun.tasks.modular import ModularTask

    for arch, outputs in (("mlp", 11), ("decoder", 13)):
        cfg = resolve(None, {"task": "modular", "modular.op": "add", "modular.p": 11, "modular.arch": arch,
                             "modular.width": 16, "modular.heads": 2, "modular.layers": 1, "modular.loss": "mse"})
        task = ModularTask(cfg.modular, 0, 32, torch.device("cpu"), torch.float64)
        x, y = task.data["val"]
        logits = task.model(x)
        assert logits.shape[-1] == outputs and task.loss_units == outputs
        expected = F.mse_loss(logits, F.one_hot(y, outputs).double())
        assert task.evaluate("val")[0].item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_evaluation_in_forward_chunks_gives_the_whole_splits_numbers_bitwise(threads):
    """On a CPU the evaluation puts 512 examples through the model at a time (faster: they stay in the caches);
    the loss, accuracy and collapse of each split are those of one pass over the split, to the last bit, at
    either thread count, with trained-looking weights (larger than at initialization) as with the initial ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        task = ModularTask(ModularConfig(), seed=0, batch_size=512, device=torch.device("cpu"), dtype=torch.float32)
        assert len(task.data["val"][0]) > 4 * task.forward_chunk
        for scale in (1.0, 5.0):
            with torch.no_grad():
                for p in task.model.parameters():
                    p.mul_(scale)
                for split in ("train", "val"):
                    task.forward_chunk = 512
                    chunked = task.evaluate(split)
                    task.forward_chunk = 10**9
                    whole = task.evaluate(split)
                    assert all(torch.equal(a, b) for a, b in zip(chunked, whole)), (split, scale, chunked, whole)
    finally:
        torch.set_num_threads(before)

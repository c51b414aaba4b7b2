"""IMDb sentiment with 1,000 reviews and a large initialization: the Grokfast LSTM setup, without torchtext.

    grokrun train --task imdb --filter ema

Reviews come from the Stanford archive (aclImdb/train/{pos,neg}/*.txt) or from a CSV of
``review,sentiment``. Tokens as the Grokfast script makes them: lower-case, split on whitespace, each
word stripped of non-word characters and digits, English stop words dropped; the vocabulary is the
most frequent training words (id 0 pads), and each review is left-padded or cut to its first tokens.
Every review lives on the device as one row of token ids.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

from grokrun.errors import UserError
from grokrun.tasks.base import EpochBatches, Task, at_least_float32, check_at_most, fork_global_generator

if TYPE_CHECKING:
    import torch
    from torch import Tensor

NAME = "imdb"


@dataclass
class Options:
    data_dir: str = "data"
    """Dataset folder (the Stanford archive is extracted to <data-dir>/aclImdb)."""
    download: bool = True
    """Download the dataset when it is missing."""
    data_file: str = ""
    """A CSV with columns review,sentiment (positive | negative), as the Grokfast script reads; replaces the archive."""
    size: int = 1000
    """Reviews: a seeded, label-balanced sample of the archive's train split, or the CSV's first N rows."""
    train_frac: float = 0.75
    """Fraction used for training, in (0, 1); the split is seeded and stratified by label."""
    vocab_size: int = 1000
    """Most frequent training words kept (id 0 is padding)."""
    seq_len: int = 500
    """Tokens per review: left-padded, or cut to the first N."""
    embedding_dim: int = 64
    """Word embedding size."""
    width: int = 256
    """LSTM hidden size."""
    layers: int = 2
    """LSTM layers."""
    init_scale: float = 6.0
    """Every initial parameter is multiplied by this."""


# Grokfast's IMDb script: AdamW with torch's default betas, gradient norm clipped at 5. Log-spaced
# evaluations, so few that the training set is scored at each.
DEFAULTS = {"optim.name": "adamw", "optim.lr": 3e-4, "optim.beta2": 0.999, "optim.weight_decay": 1.0,
            "optim.warmup_steps": 0, "optim.clip_grad": 5.0, "train.batch_size": 50, "train.max_steps": 10_000,
            "train.eval_schedule": "log", "train.train_eval_every": 1}
PRESETS = {
    "none": {},
    "ema": {"filter.alpha": 0.98, "filter.lamb": 2.0, "optim.weight_decay": 10.0},
}

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MD5 = "7c2ac02c03563afcf9b574c7e56c153a"

# NLTK's English stop-word list, the one the Grokfast script uses. Words are matched after stripping,
# so the forms with an apostrophe never match (as in the script).
STOP_WORDS = frozenset("""
a about above after again against ain all am an and any are aren aren't as at be because been before being
below between both but by can couldn couldn't d did didn didn't do does doesn doesn't doing don don't down
during each few for from further had hadn hadn't has hasn hasn't have haven haven't having he her here hers
herself him himself his how i if in into is isn isn't it it's its itself just ll m ma me mightn mightn't more
most mustn mustn't my myself needn needn't no nor not now o of off on once only or other our ours ourselves
out over own re s same shan shan't she she's should should've shouldn shouldn't so some such t than that
that'll the their theirs them themselves then there these they this those through to too under until up ve
very was wasn wasn't we were weren weren't what when where which while who whom why will with won won't
wouldn wouldn't y you you'd you'll you're you've your yours yourself yourselves
""".split())

_NON_WORD = re.compile(r"[^\w\s]")
_DIGIT = re.compile(r"\d")


def words(text: str) -> list[str]:
    """Every whitespace-separated word, lower-cased and stripped of non-word characters and digits
    ("<br" -> "br", "don't" -> "dont", "2nd" -> "nd"); what is left empty is dropped."""
    stripped = (_DIGIT.sub("", _NON_WORD.sub("", w)) for w in text.lower().split())
    return [w for w in stripped if w]


def build_vocab(texts: list[str], size: int) -> dict[str, int]:
    """The ``size`` most frequent words of ``texts`` outside the stop words -> ids 1..size (0 pads).

    Ties keep the order of first appearance, as sorting a Counter by count does."""
    counts = Counter(w for text in texts for w in words(text) if w not in STOP_WORDS)
    return {w: i + 1 for i, (w, _) in enumerate(counts.most_common(size))}


def encode(text: str, vocab: dict[str, int], seq_len: int) -> list[int]:
    """Token ids of the known words, cut to the first ``seq_len`` and left-padded with 0 to that length."""
    ids = [vocab[w] for w in words(text) if w in vocab][:seq_len]
    return [0] * (seq_len - len(ids)) + ids


def describe(cfg: Options) -> str:
    """"imdb: 1,000 reviews (aclImdb), LSTM 2×256, init ×6"."""
    source = Path(cfg.data_file).name if cfg.data_file else "aclImdb"
    return f"imdb: {cfg.size:,} reviews ({source}), LSTM {cfg.layers}×{cfg.width}, init ×{cfg.init_scale:g}"


def validate(cfg: Options) -> None:
    for flag, value in (("size", cfg.size), ("vocab-size", cfg.vocab_size), ("seq-len", cfg.seq_len),
                        ("embedding-dim", cfg.embedding_dim), ("width", cfg.width), ("layers", cfg.layers)):
        if value < 1:
            raise UserError(f"--{flag} must be >= 1, got {value}")
    if cfg.size < 4:
        raise UserError(f"--size must be >= 4 (two reviews of each label, one of each to validate), got {cfg.size}")
    check_at_most({"size": (cfg.size, 50_000), "vocab-size": (cfg.vocab_size, 100_000),
                   "seq-len": (cfg.seq_len, 10_000), "embedding-dim": (cfg.embedding_dim, 4096),
                   "width": (cfg.width, 4096), "layers": (cfg.layers, 16)})
    if not 0.0 < cfg.train_frac < 1.0:
        raise UserError(f"--train-frac must be in (0, 1), got {cfg.train_frac}")
    if not cfg.init_scale > 0:
        raise UserError(f"--init-scale must be > 0, got {cfg.init_scale}")


# --- data ----------------------------------------------------------------------------------------------

def _missing(cfg: Options, why: str) -> UserError:
    return UserError(f"IMDb is not in {Path(cfg.data_dir) / 'aclImdb'} {why}: extract {URL} there (it holds "
                       "aclImdb/train/pos/*.txt and aclImdb/train/neg/*.txt), or give --data-file with a CSV of "
                       "review,sentiment")


def read_archive(cfg: Options, seed: int) -> tuple[list[str], list[int]]:
    """A seeded, label-balanced sample of ``size`` reviews from aclImdb/train, downloading it if allowed."""
    root = Path(cfg.data_dir) / "aclImdb" / "train"
    if not (root / "pos").is_dir() or not (root / "neg").is_dir():
        if not cfg.download:
            raise _missing(cfg, "(--no-download)")
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torchvision narrates the attempt
                download_and_extract_archive(URL, download_root=cfg.data_dir, md5=MD5)
        except (RuntimeError, URLError, OSError) as e:
            raise _missing(cfg, f"and could not be downloaded ({type(e).__name__})") from e
    import torch

    g = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for label, folder in ((1, "pos"), (0, "neg")):
        files = sorted((root / folder).glob("*.txt"))
        want = cfg.size // 2 + (cfg.size % 2 if label == 1 else 0)
        if len(files) < want:
            raise UserError(f"--size {cfg.size} needs {want} reviews in {root / folder}, found {len(files)}")
        for i in torch.randperm(len(files), generator=g)[:want].tolist():
            texts.append(files[i].read_text(encoding="utf-8", errors="replace"))
            labels.append(label)
    return texts, labels


def read_csv(cfg: Options) -> tuple[list[str], list[int]]:
    """The first ``size`` rows of a CSV with columns review and sentiment (positive | negative)."""
    path = Path(cfg.data_file)
    if not path.is_file():
        raise UserError(f"--data-file {path}: no such file")
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        if not {"review", "sentiment"} <= set(reader.fieldnames or ()):
            raise UserError(f"--data-file {path} needs the columns review,sentiment; it has: "
                            f"{','.join(reader.fieldnames or ())}")
        for row in reader:
            if len(texts) == cfg.size:
                break
            sentiment = (row["sentiment"] or "").strip().lower()
            if sentiment not in ("positive", "negative"):
                raise UserError(f"--data-file {path}, row {reader.line_num}: sentiment must be positive or "
                                f"negative, got {row['sentiment']!r}")
            texts.append(row["review"] or "")
            labels.append(int(sentiment == "positive"))
    if len(texts) < cfg.size:
        raise UserError(f"--data-file {path} has {len(texts)} reviews; --size asks for {cfg.size}")
    return texts, labels


def stratified_split(labels: list[int], train_frac: float, g: torch.Generator) -> tuple[list[int], list[int]]:
    """Indices for training and validation: each label split in the same proportion, each part shuffled."""
    import torch

    train, val = [], []
    for label in (0, 1):
        idx = [i for i, y in enumerate(labels) if y == label]
        if len(idx) < 2:
            raise UserError(f"the reviews hold {len(idx)} {'positive' if label else 'negative'} one(s); "
                            "the split needs at least 2 of each label")
        idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        n_val = min(len(idx) - 1, max(1, round(len(idx) * (1 - train_frac))))
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


# --- model ---------------------------------------------------------------------------------------------

def build_model(cfg: Options):
    """Embedding, LSTM and sigmoid unit, every initial parameter (embeddings included) times init_scale."""
    from grokrun.models import SentimentLSTM, scale_init

    return scale_init(SentimentLSTM(cfg.vocab_size + 1, cfg.embedding_dim, cfg.width, cfg.layers), cfg.init_scale)


class ImdbTask(Task):
    eval_chunk = 1000  # (not batchable: the LSTM's fused kernels have no vmap rule)

    def __init__(self, cfg: Options, seed: int, batch_size: int, device: torch.device, dtype: torch.dtype):
        import torch

        texts, labels = read_csv(cfg) if cfg.data_file else read_archive(cfg, seed)
        g = torch.Generator().manual_seed(seed)
        train_idx, val_idx = stratified_split(labels, cfg.train_frac, g)
        vocab = build_vocab([texts[i] for i in train_idx], cfg.vocab_size)

        def tensors(idx: list[int]) -> tuple[Tensor, Tensor]:
            x = torch.tensor([encode(texts[i], vocab, cfg.seq_len) for i in idx], dtype=torch.long)
            y = torch.tensor([labels[i] for i in idx], dtype=dtype)
            return x.to(device), y.to(device)

        self.data = {"train": tensors(train_idx), "val": tensors(val_idx)}
        torch.manual_seed(seed)
        self.model = build_model(cfg).to(device=device, dtype=dtype)
        self.batches = EpochBatches(len(train_idx), batch_size, device, fork_global_generator())

    def objective(self, model, data: tuple[Tensor, Tensor], idx: Tensor) -> Tensor:
        import torch.nn.functional as F

        x, y = data
        # BCE on the sigmoid, as published: torch clamps log(0) to -100, and a saturated sigmoid passes
        # no gradient, which the large initialization makes common. BCE-with-logits would train differently.
        return F.binary_cross_entropy(model(x[idx]), y[idx])

    def score(self, model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        import torch
        import torch.nn.functional as F

        p = at_least_float32(model(x))
        correct = ((p > 0.5) == (y > 0.5)).sum()
        return F.binary_cross_entropy(p, y.to(p.dtype), reduction="sum"), correct, torch.zeros_like(correct)


def build(cfg, device: torch.device, dtype: torch.dtype) -> ImdbTask:
    """The task for a resolved run config."""
    return ImdbTask(cfg.imdb, cfg.seed, cfg.train.batch_size, device, dtype)

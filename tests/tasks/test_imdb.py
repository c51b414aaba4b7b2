"""The IMDb task offline: a tiny aclImdb tree and a tiny CSV, written by the tests; the tokenizer by hand."""

import csv
import json

import pytest
import torch

from grokrun.config import resolve
from grokrun.tasks.imdb import URL, build_vocab, encode, stratified_split, words

from fakedata import write_archive, write_csv

# Small enough for a second on a CPU (the published sizes are the defaults). With these, seeds 0-2 reach
# 95% validation accuracy between steps 70 and 300, from the archive (EMA) and from the CSV (baseline).
SMALL = ["--size", "100", "--vocab-size", "40", "--seq-len", "24", "--embedding-dim", "16", "--width", "32",
         "--layers", "1", "--init-scale", "1.0", "--lr", "3e-3", "--max-steps", "400", "--batch-size", "25",
         "--quiet"]


def train(cli, tmp_path, *args):
    result = cli(["train", "--task", "imdb", "--out", str(tmp_path / "runs"), *args])
    assert "Traceback" not in result.output, result.output
    return result


def summary_of(tmp_path, name):
    return json.loads((tmp_path / "runs" / name / "summary.json").read_text())


def test_words_vocab_and_encoding_by_hand():
    text = "This movie was GREAT!!! <br /><br />10/10, don't miss it."
    assert words(text) == ["this", "movie", "was", "great", "br", "br", "dont", "miss", "it"]
    vocab = build_vocab(["The good movie, good!", "a BAD movie"], 10)
    assert vocab == {"good": 1, "movie": 2, "bad": 3}  # ties in first-seen order; stop words dropped
    assert build_vocab(["good movie good", "bad movie"], 1) == {"good": 1}
    assert encode("movie was good", vocab, 5) == [0, 0, 0, 2, 1]  # unknown words dropped, padded on the left
    assert encode("good good bad movie", vocab, 2) == [1, 1]  # cut to the first tokens


def test_split_is_stratified_and_seeded():
    labels = [1] * 80 + [0] * 20
    train, val = stratified_split(labels, 0.75, torch.Generator().manual_seed(0))
    assert len(val) == 25 and sum(labels[i] for i in val) == 20  # 25% of each label
    assert sorted(train + val) == list(range(100))
    again = stratified_split(labels, 0.75, torch.Generator().manual_seed(0))
    other = stratified_split(labels, 0.75, torch.Generator().manual_seed(1))
    assert again == (train, val) and other != (train, val)


def test_learns_from_the_archive_layout(cli, tmp_path):
    data = write_archive(tmp_path / "data")
    result = train(cli, tmp_path, "--data-dir", str(data), "--no-download", "--filter", "ema", *SMALL)
    assert result.exit_code == 0, result.output
    s = summary_of(tmp_path, "imdb-ema-seed0")
    assert s["status"] == "completed" and s["best_val_acc"] >= 0.9, s  # chance is 0.5
    config = json.loads((tmp_path / "runs" / "imdb-ema-seed0" / "config.json").read_text())
    assert config["optim"]["clip_grad"] == 5.0 and config["optim"]["weight_decay"] == 10.0


def test_learns_from_a_csv(cli, tmp_path):
    path = write_csv(tmp_path / "reviews.csv")
    result = train(cli, tmp_path, "--data-file", str(path), *SMALL)
    assert result.exit_code == 0, result.output
    s = summary_of(tmp_path, "imdb-none-seed0")
    assert s["best_val_acc"] >= 0.9, s


def test_published_defaults_and_presets():
    base = resolve(None, {"task": "imdb"})
    i = base.imdb
    assert (i.size, i.train_frac, i.vocab_size, i.seq_len, i.embedding_dim, i.width, i.layers, i.init_scale) == (
        1000, 0.75, 1000, 500, 64, 256, 2, 6.0)
    o = base.optim
    assert (o.name, o.lr, o.weight_decay, o.clip_grad, o.warmup_steps) == ("adamw", 3e-4, 1.0, 5.0, 0)
    assert (base.train.batch_size, base.train.max_steps) == (50, 10_000)
    ema = resolve(None, {"task": "imdb", "filter.name": "ema"})
    assert (ema.filter.alpha, ema.filter.lamb, ema.optim.weight_decay) == (0.98, 2.0, 10.0)


def test_missing_data_says_what_to_place_where(cli, tmp_path):
    result = train(cli, tmp_path, "--data-dir", str(tmp_path / "none"), "--no-download")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: IMDb is not in {tmp_path / 'none' / 'aclImdb'} (--no-download): extract {URL} there (it holds "
        "aclImdb/train/pos/*.txt and aclImdb/train/neg/*.txt), or give --data-file with a CSV of review,sentiment")
    assert not (tmp_path / "runs").exists()


def test_failed_download_is_one_clear_line(cli, tmp_path, monkeypatch):
    import grokrun.tasks.imdb as imdb

    monkeypatch.setattr(imdb, "URL", "http://127.0.0.1:9/aclImdb_v1.tar.gz")  # refused at once, as offline
    result = train(cli, tmp_path, "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "and could not be downloaded" in lines[0] and "--data-file" in lines[0]


@pytest.mark.parametrize("content,message", [
    ("text,label\nfine,positive\n", "needs the columns review,sentiment; it has: text,label"),
    ("review,sentiment\nfine,positive\nmeh,neutral\n", "row 3: sentiment must be positive or negative, got 'neutral'"),
    ("review,sentiment\nfine,positive\nbad,negative\n", "has 2 reviews; --size asks for 1000"),
])
def test_bad_csv(cli, content, message, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(content)
    result = train(cli, tmp_path, "--data-file", str(path))
    line = result.stderr.strip()
    assert result.exit_code == 2 and line.startswith(f"error: --data-file {path}") and line.endswith(message), line


def test_compare_works_for_imdb(cli, tmp_path):
    path = write_csv(tmp_path / "reviews.csv")
    out = tmp_path / "cmp"
    result = cli(["compare", "--task", "imdb", "--filter", "ema", "--data-file", str(path),
                  "--seeds", "0", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["baseline", "ema"]
    # both learn the sentiment words (seeds 0-2 reach 1.0 here); chance is 0.5
    assert all(r["reached"] == "1" and float(r["best_val_acc_median"]) >= 0.95 for r in rows), rows

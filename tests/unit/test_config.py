"""Resolution order: defaults -> task defaults -> published preset (or file) -> flags."""

import json
from dataclasses import asdict, fields

import pytest

from grokrun.config import SECTIONS, RunBase, resolve, section_docs, to_dict
from grokrun.errors import UserError
from grokrun.fields import field_docs
from grokrun.flags import flags


def test_filter_flag_alone_gives_the_published_settings():
    ema = resolve(None, {"filter.name": "ema"})
    assert (ema.filter.alpha, ema.filter.lamb, ema.optim.weight_decay) == (0.98, 2.0, 0.005)
    ma = resolve(None, {"filter.name": "ma"})
    assert (ma.filter.window_size, ma.filter.lamb, ma.optim.weight_decay) == (100, 5.0, 0.01)
    base = resolve(None, {"filter.name": "none"})
    assert (base.optim.weight_decay, base.train.max_steps) == (0.0, 100_000)
    assert (base.optim.name, base.optim.lr, base.optim.beta2, base.train.batch_size) == ("adam", 1e-3, 0.98, 512)


def test_a_flag_overrides_its_preset_value_only():
    cfg = resolve(None, {"filter.name": "ema", "filter.lamb": 3.0})
    assert (cfg.filter.alpha, cfg.filter.lamb, cfg.optim.weight_decay) == (0.98, 3.0, 0.005)


def test_flags_win_over_a_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('task = "modular"\n[filter]\nname = "ema"\nlamb = 4.0\n[modular]\np = 31\n')
    cfg = resolve(path, {"filter.lamb": 1.5, "*.op": "add"})
    assert (cfg.filter.name, cfg.filter.lamb, cfg.modular.p, cfg.modular.op) == ("ema", 1.5, 31, "add")
    # a file replaces the preset: the EMA preset's weight decay is not applied
    assert cfg.optim.weight_decay == 0.0


def test_saved_config_resolves_to_the_same_config(tmp_path):
    cfg = resolve(None, {"filter.name": "ma", "seed": 3, "*.p": 53, "train.stop_at_acc": 0.9})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(to_dict(cfg)))
    assert asdict(resolve(path, {})) == asdict(cfg)
    assert asdict(resolve(tmp_path, {})) == asdict(cfg)  # a run directory works too


def test_the_default_thread_count_is_made_the_number_when_a_run_is_configured(tmp_path, monkeypatch):
    """--threads 0 (the default) becomes this machine's count in the config itself, so config.json records it and
    every launcher that later resolves that config (a --jobs worker, a Ray task, a resume) runs with it."""
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve(None, {}).threads == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what torch itself would take
    cfg = resolve(None, {})
    assert cfg.threads == 3 and resolve(None, {"threads": 5}).threads == 5
    old = to_dict(cfg) | {"threads": 0}  # a config.json written before the count was recorded
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve(old, {}).threads == 2 and resolve(to_dict(cfg), {}).threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "four")  # not a count: the cores
    assert resolve(None, {}).threads == len(os.sched_getaffinity(0))


def test_int_given_for_a_float_is_accepted_but_not_the_reverse(tmp_path):
    assert resolve(None, {"optim.lr": 1}).optim.lr == 1.0
    path = tmp_path / "c.toml"
    path.write_text("[train]\nbatch_size = 1.5\n")
    with pytest.raises(UserError, match="must be int"):
        resolve(path, {})


def test_a_section_name_is_not_a_value(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('filter = "ema"\n')
    with pytest.raises(UserError, match="unknown setting 'filter'"):
        resolve(path, {})


def test_every_field_has_a_docstring_and_a_unique_flag():
    docs = field_docs(RunBase)
    assert all(f.name in SECTIONS or docs.get(f.name) for f in fields(RunBase))
    for section, cls in SECTIONS.items():
        docs = section_docs(section)
        for f in fields(cls):
            assert docs.get(f.name), f"{section}.{f.name} has no docstring"
    names = [f.name for f in flags()]
    assert len(names) == len(set(names))
    assert {"filter", "alpha", "lamb", "window-size", "filter-type", "ma-warmup", "filter-start", "optimizer",
            "eval-every", "stop-at-acc", "p", "op", "train-frac", "max-steps", "seed", "dtype"} <= set(names)

"""Checkpoints (grokrun.checkpoint) and the resume checks (grokrun.resume): whole or refused, and only for the
run that wrote them."""

import pytest
import torch

from grokrun import checkpoint, resume
from grokrun.config import resolve
from grokrun.errors import UserError
from grokrun.results import CHECKPOINT


def test_a_checkpoint_comes_back_as_it_was_saved(tmp_path):
    state = {"step": 12, "model": {"w": torch.arange(3.0)}, "rng": checkpoint.rng_states()}
    checkpoint.save(tmp_path, state)
    back = checkpoint.load(tmp_path)
    assert back["step"] == 12 and torch.equal(back["model"]["w"], torch.arange(3.0))
    assert checkpoint.step_of(tmp_path) == 12
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temporary left


def test_a_missing_or_damaged_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match="has no checkpoint.pt \\(it stopped before its first checkpoint\\)"):
        checkpoint.load(tmp_path)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read .*checkpoint.pt .*it is damaged"):
        checkpoint.load(tmp_path)


def test_a_checkpoint_resumes_only_the_run_that_wrote_it(tmp_path):
    cfg = resolve(None, {"task": "modular", "filter.name": "ema"})
    saved = {"settings": resume.resumable_settings(cfg), "fingerprint": "abc"}
    resume.check_belongs(saved, cfg, "abc", tmp_path)  # its own run, its own data
    other = resolve(None, {"task": "modular", "filter.name": "ema", "filter.lamb": 3.0})
    with pytest.raises(UserError, match="written by a run with filter.lamb = 2.0, but config.json there says 3.0"):
        resume.check_belongs(saved, other, "abc", tmp_path)
    with pytest.raises(UserError, match="differ from its checkpoint's"):
        resume.check_belongs(saved, cfg, "another", tmp_path)
    moved = resolve(None, {"task": "modular", "filter.name": "ema", "out": "elsewhere", "name": "x"})
    resume.check_belongs(saved, moved, "abc", tmp_path)  # where the run directory lies is no setting of the run

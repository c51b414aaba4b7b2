"""Weight snapshots (grokrun.snapshots): one file per step, read back by step, forgotten after a checkpoint."""

import torch

from grokrun import snapshots


def test_snapshots_are_saved_listed_loaded_and_discarded_after_a_step(tmp_path):
    for step in (0, 10, 250):
        snapshots.save(tmp_path, step, {"w": torch.full((2,), float(step))})
    assert snapshots.saved_steps(tmp_path) == [0, 10, 250]
    assert torch.equal(snapshots.load(tmp_path, 10)["w"], torch.full((2,), 10.0))
    (tmp_path / snapshots.FOLDER / "notes.txt").write_text("not a snapshot")
    snapshots.discard_after(tmp_path, 10)
    assert snapshots.saved_steps(tmp_path) == [0, 10]
    assert snapshots.saved_steps(tmp_path / "none") == []

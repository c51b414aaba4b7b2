"""Every shipped preset opens with the command that runs it and equals the published preset in code."""

from dataclasses import asdict
from pathlib import Path

import pytest

from grokrun.config import resolve
from grokrun.tasks import TASKS, task

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


def test_every_preset_in_code_has_a_file():
    names = {p.stem for p in CONFIGS}
    for name in TASKS:
        for filt in task(name).PRESETS:
            assert f"{name}_{'baseline' if filt == 'none' else filt}" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_opens_with_its_command_and_matches_the_code_preset(path):
    first = path.read_text().splitlines()[0]
    assert first == f"# grokrun train --config configs/{path.name}"
    task, _, variant = path.stem.partition("_")
    from_file = resolve(path, {})
    if task not in TASKS:  # a study's setup (nanda_add, prieto_add_float32): it resolves, and names its task
        assert from_file.task in TASKS
        return
    from_flags = resolve(None, {"task": task, "filter.name": "none" if variant == "baseline" else variant})
    assert asdict(from_file) == asdict(from_flags)

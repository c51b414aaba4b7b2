"""The registries' protocols (grokrun.plugins): grokrun's own entries pass the checks a plugin's must pass, and
a registered entry becomes part of the config, the flags and the choices; reset forgets it."""

from dataclasses import dataclass

import pytest

from grokrun import plugins
from grokrun.config import resolve, run_config_class, to_dict
from grokrun.errors import UserError
from grokrun.filters import GradFilter
from grokrun.flags import flags
from grokrun.tasks import task


def test_every_built_in_entry_passes_its_kinds_protocol():
    for kind, registry in plugins.registries().items():
        for name, entry in registry.items():
            entry = task(name) if kind == "task" else entry
            assert plugins.PROTOCOLS[kind](name, entry) is None, (kind, name)


class Gain(GradFilter):
    name = "gain"

    @dataclass
    class Settings:
        gain: float = 3.0
        """Multiply the gradient by this."""

    def __init__(self, gain: float = 3.0):
        self.gain = gain

    def _filter(self, keys, grads, amplify):
        for g in grads:
            g.mul_(self.gain)


def test_a_registered_filter_joins_the_config_the_flags_and_the_choices():
    before = run_config_class()
    with pytest.raises(UserError, match="unknown filter 'gain'"):
        resolve(None, {"filter.name": "gain"})
    plugins.register("filter", "gain", Gain, source="this test")
    cfg = resolve(None, {"filter.name": "gain", "filter.gain": 0.5})
    assert cfg.filter.gain == 0.5 and to_dict(cfg)["filter"]["gain"] == 0.5
    assert resolve(None, {"filter.name": "gain"}).filter.gain == 3.0  # its own default
    flag = next(f for f in flags() if f.name == "gain")
    assert flag.key == "filter.gain" and flag.help == "(gain) Multiply the gradient by this." and flag.type is float
    assert "gain" in next(f for f in flags() if f.name == "filter").help
    assert run_config_class() is not before
    plugins.register("filter", "gain", Gain, source="this test")  # the same source again: no clash
    with pytest.raises(UserError, match=r"plugin another file: filter name 'gain' is taken \(by this test\)"):
        plugins.register("filter", "gain", Gain, source="another file")
    plugins.reset()
    assert "gain" not in {f.name for f in flags()}
    with pytest.raises(UserError, match="unknown filter 'gain'"):
        resolve(None, {"filter.name": "gain"})


def test_a_setting_two_filters_share_must_have_one_type():
    class IntLamb(Gain):
        name = "intlamb"

        @dataclass
        class Settings:
            lamb: int = 1
            """An integer lamb."""

    with pytest.raises(UserError, match="setting 'lamb' is a int, but the ema filter's is a float; rename it"):
        plugins.register("filter", "intlamb", IntLamb, source="this test")


def test_a_filter_may_not_take_the_shared_setting_names():
    class Named(Gain):
        name = "named"

        @dataclass
        class Settings:
            start: int = 1
            """Its own start."""

    with pytest.raises(UserError, match="cannot name a setting 'start' \\(every filter has it\\)"):
        plugins.register("filter", "named", Named, source="this test")


def test_an_optimizer_needs_the_builder_signature():
    with pytest.raises(UserError, match="must be a function build\\(optim_settings, params\\)"):
        plugins.register("optimizer", "odd", lambda params: None, source="this test")


def test_a_task_option_another_task_has_must_have_its_type(tmp_path):
    path = tmp_path / "wide.py"
    path.write_text(
        "from dataclasses import dataclass\n"
        "NAME = 'wide'\n"
        "@dataclass\n"
        "class Options:\n"
        "    width: float = 1.5\n"
        "    \"\"\"A width that is not a whole number.\"\"\"\n"
        "DEFAULTS, PRESETS = {}, {'none': {}}\n"
        "def validate(o): pass\ndef describe(o): return 'wide'\ndef build_model(o): pass\n"
        "def build(cfg, device, dtype): pass\n")
    with pytest.raises(UserError, match="task wide option 'width' is a float, but the modular task's is a int"):
        plugins.load([str(path)])

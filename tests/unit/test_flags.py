"""Every config field as a flag (grokrun.flags): names, types, help and defaults, shared ones merged."""

from grokrun.flags import flags


def by_name():
    return {f.name: f for f in flags()}


def test_a_setting_two_filters_share_is_one_flag_naming_both_defaults():
    lamb = by_name()["lamb"]
    assert lamb.key == "filter.lamb" and lamb.type is float and lamb.panel == "Filter"
    assert lamb.help.startswith("(ema, ma) Amplification of the slow gradient")
    assert lamb.default == "ema: 2.0, ma: 5.0"
    assert by_name()["alpha"].help.startswith("(ema) EMA momentum") and by_name()["alpha"].default == 0.98
    assert by_name()["ma-warmup"].key == "filter.warmup" and by_name()["ma-warmup"].type is bool


def test_task_options_share_a_flag_across_tasks():
    width = by_name()["width"]
    assert width.key == "*.width" and width.panel == "Task"
    layers = by_name()["layers"]
    assert "modular:" in layers.help and "imdb:" in layers.help  # the same name means different things


def test_choices_list_the_registries_and_plugins_is_no_flag():
    names = by_name()
    assert "One of: modular, mnist, imdb, qm9, parity, xor." in names["task"].help
    assert "One of: adam, adamw, sgd, muon." in names["optimizer"].help
    assert "plugins" not in names and "plugin" not in names  # (--plugin is the CLI's own option)

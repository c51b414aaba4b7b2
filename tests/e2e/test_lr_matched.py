"""compare --lr-matched: baselines whose learning rate matches each filter's larger step."""

import json

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "4", "--max-steps", "8", "--quiet"]


def test_lr_matched_baselines_use_lr_times_one_plus_lamb(cli, tmp_path):
    out = tmp_path / "cmp"
    result = cli(["compare", *TINY, "--filter", "ema", "--filter", "ma", "--filter", "orthograd", "--lamb", "3",
                  "--lr", "2e-3", "--seeds", "0", "--lr-matched", "--out", out])
    assert result.exit_code == 0, result.output

    def config(name):
        return json.loads((out / f"{name}-seed0" / "config.json").read_text())

    # --lamb 3 for every filter: one matched baseline, lr 2e-3 x 4; ⊥Grad does not amplify and adds none
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == \
        ["baseline-lr×4-seed0", "baseline-seed0", "ema-seed0", "ma-seed0", "orthograd-seed0"]
    matched = config("baseline-lr×4")
    assert matched["optim"]["lr"] == 2e-3 * 4 and matched["filter"]["name"] == "none"
    assert config("baseline")["optim"]["lr"] == 2e-3
    rows = (out / "comparison.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["baseline", "baseline-lr×4", "ema", "ma", "orthograd"]


def test_published_lambs_give_one_baseline_each(cli, tmp_path):
    out = tmp_path / "cmp"
    result = cli(["compare", *TINY, "--filter", "ema", "--filter", "ma", "--seeds", "0", "--lr-matched", "--out", out])
    assert result.exit_code == 0, result.output
    lrs = {p.name: json.loads((p / "config.json").read_text())["optim"]["lr"] for p in out.iterdir() if p.is_dir()}
    assert lrs == {"baseline-seed0": 1e-3, "baseline-lr×3-seed0": 3e-3, "baseline-lr×6-seed0": 6e-3,
                   "ema-seed0": 1e-3, "ma-seed0": 1e-3}  # EMA's lamb 2 and MA's 5, as published


def test_lr_matched_needs_filters(cli, tmp_path):
    (tmp_path / "a.toml").write_text('task = "modular"\n')
    result = cli(["compare", tmp_path / "a.toml", "--lr-matched", "--out", tmp_path / "o"])
    assert result.exit_code == 2 and "--lr-matched adds baselines to --filter variants" in result.stderr

"""grokrun plot: figures from run directories only, for accuracy and regression runs."""

import numpy as np
import pytest

from grokrun.plot import band, describe_filter, describe_task, plot_path
from grokrun.runs import read_run

PNG = b"\x89PNG\r\n\x1a\n"


def is_image(path, fmt="png"):
    data = path.read_bytes()
    head = {"png": PNG, "svg": b"<?xml", "pdf": b"%PDF"}[fmt]
    return data.startswith(head) and len(data) > 2000


def test_accuracy_runs_get_curves_and_an_overlay(tmp_path, make_run):
    for seed in range(3):
        make_run(tmp_path / f"baseline-seed{seed}", seed=seed, val_acc=[0.0, 0.1, 0.2, 0.3 + 0.1 * seed])
        make_run(tmp_path / f"ema-seed{seed}", seed=seed, filter="ema", val_acc=[0.0, 0.5, 0.96, 0.99])
    report = plot_path(tmp_path)
    assert report.runs == 6 and report.warnings == []
    for run in tmp_path.glob("*-seed*"):
        assert is_image(run / "accuracy.png") and is_image(run / "loss.png")
        assert not (run / "weight_norm.png").exists()  # these runs have no weight_norm column
    assert report.overlays == [tmp_path / "comparison.png"] and is_image(tmp_path / "comparison.png")


def test_regression_runs_have_no_accuracy_figure(tmp_path, make_run):
    for seed in range(2):
        make_run(tmp_path / f"baseline-seed{seed}", seed=seed, task="qm9", val_loss=[1.0, 0.1, 0.01])
    report = plot_path(tmp_path, fmt="svg")
    run = tmp_path / "baseline-seed0"
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".svg") == ["loss.svg"]
    assert is_image(run / "loss.svg", "svg") and is_image(tmp_path / "comparison.svg", "svg")
    assert report.overlays == [tmp_path / "comparison.svg"]


def test_pdf_format(tmp_path, make_run):
    make_run(tmp_path / "r", val_acc=[0.0, 0.5])
    plot_path(tmp_path / "r", fmt="pdf")
    assert is_image(tmp_path / "r" / "accuracy.pdf", "pdf")
    assert not (tmp_path / "r" / "comparison.pdf").exists()  # one run: nothing to overlay


def test_band_is_median_min_max_across_seeds(tmp_path, make_run):
    runs = [read_run(make_run(tmp_path / f"s{i}", seed=i, val_acc=acc)) for i, acc in enumerate(
        [[0.0, 0.1, 0.2, 0.3], [0.0, 0.3, 0.4, 0.5], [0.0, 0.2, 0.9]])]  # the last stopped one evaluation early
    steps, median, low, high = band(runs, "val_acc")
    assert steps.tolist() == [100, 200, 300]  # step 0 cannot sit on a log axis
    np.testing.assert_allclose(median, [0.2, 0.4, 0.4])  # at step 300: the two runs that got there
    np.testing.assert_allclose(low, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(high, [0.3, 0.9, 0.5])


def test_titles_name_task_and_filter_settings(tmp_path, make_run):
    # a run without a saved title (unfinished, or older than saved titles) is described from its config
    run = read_run(make_run(tmp_path / "r", filter="ema", val_acc=[0.0, 0.5]))
    assert describe_task(run) == "modular: x·y mod 97, 50% train"
    assert describe_filter(run) == "EMA α=0.98 λ=2 · adam wd 0.005"
    run.config["filter"].update(name="ma", window_size=100, lamb=5.0)
    assert describe_filter(run).startswith("MA window 100 λ=5")
    run.config["modular"]["op"] = "x2+xy+y2"
    assert describe_task(run).startswith("modular: x²+xy+y² mod 97")
    # a run that saved its title is described by it, without its task's code
    run.summary["title"] = {"task": "sparse parity: n=40, k=3", "variant": "sign λ=0.1 · adamw wd 1"}
    run.config["task"] = "sparse_parity"
    assert (describe_task(run), describe_filter(run)) == ("sparse parity: n=40, k=3", "sign λ=0.1 · adamw wd 1")


def test_cli_warns_about_a_folder_that_is_not_a_run(cli, tmp_path, make_run):
    make_run(tmp_path / "runs" / "a-seed0", val_acc=[0.0, 0.5, 0.9])
    make_run(tmp_path / "runs" / "a-seed1", seed=1, val_acc=[0.0, 0.6, 0.9])
    (tmp_path / "runs" / "notes" / "draft").mkdir(parents=True)
    result = cli(["plot", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"warning: skipping {tmp_path / 'runs' / 'notes'}: not a run directory "
                                     "(it has no config.json and metrics.csv)")
    assert result.stdout.startswith("wrote 4 figures for 2 runs; overlay ")
    assert is_image(tmp_path / "runs" / "comparison.png")


@pytest.mark.parametrize("args,message", [
    (["plot", "nowhere"], "no such folder: nowhere"),
    (["plot", "empty"], "nothing to draw in empty: it holds no run directories"),
    (["plot", "empty", "--format", "gif"], "unknown format 'gif'; choose one of: png, svg, pdf"),
    (["plot", "empty", "--threshold", "0"], "--threshold must be in (0, 1], got 0.0"),
])
def test_cli_errors(cli, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    result = cli(args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {message}"


def test_weight_norm_is_drawn_when_the_run_has_it(tmp_path, make_run):
    for seed in range(2):
        make_run(tmp_path / f"ema-seed{seed}", seed=seed, filter="ema", val_acc=[0.0, 0.5, 0.96],
                 weight_norm=[90.0, 60.0 + seed, 30.0])
    report = plot_path(tmp_path)
    assert sorted(p.name for p in report.figures if p.parent.name == "ema-seed0") == [
        "accuracy.png", "loss.png", "weight_norm.png"]
    assert is_image(tmp_path / "ema-seed0" / "weight_norm.png") and is_image(tmp_path / "comparison.png")
    steps, median, low, high = band([read_run(tmp_path / f"ema-seed{s}") for s in range(2)], "weight_norm")
    np.testing.assert_allclose(median, [60.5, 30.0])
    np.testing.assert_allclose(high, [61.0, 30.0])

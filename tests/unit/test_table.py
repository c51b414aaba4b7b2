"""The comparison table's arithmetic, on run directories built by hand (tests/conftest.py)."""

import csv
import math

import pytest

from grokrun.runs import group_variants, read_run
from grokrun.table import Bound, fmt_speedup, median_bound, ratio, tabulate
from grokrun.table_write import columns, write_csv, write_markdown

INF = math.inf


def reaching(step, n=31):
    """Val acc per evaluation (every 100 steps): 0.1 until ``step``, then 0.96; None: never reaches 0.95."""
    return [0.96 if step is not None and 100 * i >= step else 0.1 for i in range(n)]


def variant(tmp_path, name, specs, **common):
    runs = []
    for seed, spec in enumerate(specs):
        kwargs = {**common, **spec}
        runs.append(read_run(_write(tmp_path / f"{name}-seed{seed}", seed=seed, **kwargs)))
    return name, runs


def _write(path, **kwargs):
    from conftest import write_run

    return write_run(path, **kwargs)


def cells(rows, threshold=0.95):
    headers, body = columns(rows, threshold)
    return [dict(zip(headers, row)) for row in body]


def test_median_bound_and_ratio_by_hand():
    assert median_bound([Bound(900, 900), Bound(1300, 1300), Bound(1000, 1000)]) == Bound(1000, 1000)
    assert median_bound([Bound(900, 900), Bound(1000, 1000)]) == Bound(950, 950)  # even: mean of the middle two
    # one seed not reached within 3,000: more than 3,000, so it sits above the two that reached
    assert median_bound([Bound(1000, 1000), Bound(2000, 2000), Bound(3000, INF)]) == Bound(2000, 2000)
    # two of three not reached: the median is only known to be at least 3,000
    assert median_bound([Bound(1000, 1000), Bound(3000, INF), Bound(3000, INF)]) == Bound(3000, INF)
    assert median_bound([]) is None
    assert ratio(Bound(3000, INF), Bound(1000, 1000)) == Bound(3.0, INF)
    assert ratio(Bound(3000, 3000), Bound(1000, INF)) == Bound(0.0, 3.0)
    assert ratio(Bound(3000, INF), Bound(3000, INF)) == Bound(0.0, INF)
    assert ratio(Bound(INF, INF), Bound(INF, INF)) is None


@pytest.mark.parametrize("bound,text", [
    (Bound(43.83, 43.83), "43.8×"), (Bound(3.0, INF), "≥ 3×"), (Bound(0.0, 0.75), "≤ 0.75×"),
    (Bound(0.0, INF), "—"), (Bound(0.0, 0.0), "—"), (None, "—"), (Bound(1234.0, 1234.0), "1,234×"),
])
def test_speedup_text(bound, text):
    assert fmt_speedup(bound) == text


def test_grokfast_table_with_a_baseline_that_never_reaches(tmp_path):
    base = variant(tmp_path, "baseline", [{}, {}, {}], val_acc=reaching(None), wall_per_step=0.01)
    ema = variant(tmp_path, "ema", [{"val_acc": reaching(900), "ms_per_step": 10.0, "peak": 100.0},
                                    {"val_acc": reaching(1300), "ms_per_step": 12.0, "peak": 120.0},
                                    {"val_acc": reaching(1000), "ms_per_step": 11.0, "peak": 110.0}],
                  filter="ema", wall_per_step=0.012)
    rows = tabulate([base, ema], 0.95)
    b, e = cells(rows)
    assert b["reached 95%"] == "0/3" and b["steps to 95% (median)"] == "≥ 3,000" and b["steps min–max"] == "—"
    assert b["time to 95% (median, s)"] == "≥ 30.0" and b["speedup (steps)"] == "baseline"
    assert e["reached 95%"] == "3/3"
    assert e["steps to 95% (median)"] == "1,000" and e["steps min–max"] == "900–1,300"
    assert e["time to 95% (median, s)"] == "12.0" and e["time min–max"] == "10.8–15.6"  # steps x 0.012 s
    assert e["ms/step"] == "11.00" and e["peak MB"] == "120"  # median ms/step; the largest peak
    assert e["speedup (steps)"] == "≥ 3×"  # more than 3,000 / 1,000
    assert e["speedup (time)"] == "≥ 2.5×"  # more than 30 s / 12 s
    assert e["best val acc"] == "0.960" and "notes" not in e


def test_speedup_is_exact_when_the_baseline_median_is_known(tmp_path):
    base = variant(tmp_path, "baseline", [{"val_acc": reaching(1000)}, {"val_acc": reaching(2000)},
                                          {"val_acc": reaching(None)}], wall_per_step=0.01)
    ema = variant(tmp_path, "ema", [{"val_acc": reaching(500)}, {"val_acc": reaching(500)},
                                    {"val_acc": reaching(700)}], filter="ema", wall_per_step=0.01)
    rows = tabulate([base, ema], 0.95)
    assert rows[0].steps_to == Bound(2000, 2000) and rows[0].reached == 2
    assert rows[1].speedup_steps == Bound(4.0, 4.0) and rows[1].speedup_wall == Bound(4.0, 4.0)
    b, e = cells(rows)
    assert b["reached 95%"] == "2/3" and b["steps to 95% (median)"] == "2,000" and b["steps min–max"] == "1,000–2,000"
    assert e["speedup (steps)"] == "4×" and e["speedup (time)"] == "4×"


def test_a_variant_slower_than_the_baseline_and_one_that_never_reaches(tmp_path):
    base = variant(tmp_path, "baseline", [{"val_acc": reaching(600)}, {"val_acc": reaching(600)}])
    slow = variant(tmp_path, "ma", [{"val_acc": reaching(None)}, {"val_acc": reaching(None)}], filter="ma")
    rows = tabulate([base, slow], 0.95)
    assert cells(rows)[1]["speedup (steps)"] == "≤ 0.2×"  # at most 600 / 3,000


def test_diverged_and_interrupted_runs_are_shown_and_counted(tmp_path):
    base = variant(tmp_path, "baseline", [{"val_acc": reaching(1000)}] * 3)
    nan = float("nan")
    ema = variant(tmp_path, "ema", [
        {"val_acc": reaching(500)},
        {"val_acc": [0.1] * 8, "val_loss": [1.0] * 7 + [nan], "status": "diverged"},  # diverged at step 700
        {"val_acc": reaching(600)},
    ], filter="ema")
    ma = variant(tmp_path, "ma", [
        {"val_acc": reaching(100, n=3)},
        {"val_acc": reaching(200, n=3)},
        {"val_acc": [0.1], "steps": 50, "status": "interrupted"},  # stopped by the user at step 50
    ], filter="ma")
    rows = tabulate([base, ema, ma], 0.95)
    # a diverged run never reaches the threshold: it counts above every seed that did
    assert rows[1].steps_to == Bound(600, 600) and rows[1].reached == 2
    assert rows[1].notes == ["seed 1 diverged at step 700"]
    assert rows[1].min_val_loss == pytest.approx(1.0 - 0.9 * 0.96)  # the NaN is not a minimum
    # an interrupted run only bounds its seed from below (more than 50 steps): the median is >= 100
    assert rows[2].steps_to == Bound(100, 200)
    assert rows[2].notes == ["seed 2 interrupted at step 50"]
    _, e, m = cells(rows)
    assert e["notes"] == "seed 1 diverged at step 700" and e["reached 95%"] == "2/3"
    assert m["steps to 95% (median)"] == "≥ 100" and m["speedup (steps)"] == "≥ 5×"  # 1,000 / [100, 200]


def test_a_variant_whose_seeds_mostly_diverged_has_no_median(tmp_path):
    base = variant(tmp_path, "baseline", [{"val_acc": reaching(1000)}])
    bad = variant(tmp_path, "ema", [{"val_acc": [0.1] * 3, "status": "diverged"}], filter="ema")
    _, b = cells(tabulate([base, bad], 0.95))
    assert b["steps to 95% (median)"] == "—" and b["speedup (steps)"] == "—" and b["notes"].endswith("diverged at step 200")


def test_unfinished_run_without_summary_is_incomplete(tmp_path):
    base = variant(tmp_path, "baseline", [{"val_acc": reaching(None, n=5), "summary": False}])
    row = tabulate([base], 0.95)[0]
    assert row.notes == ["seed 0 incomplete at step 400"] and row.steps_to == Bound(400, INF)


def test_regression_headline_is_min_val_loss_and_its_step(tmp_path):
    base = variant(tmp_path, "baseline", [{"val_loss": [1.0, 0.0066, 0.01]}, {"val_loss": [1.0, 0.02, 0.007]},
                                          {"val_loss": [1.0, 0.006, 0.2]}], task="qm9")
    ema = variant(tmp_path, "ema", [{"val_loss": [1.0, 0.0035, 0.01]}, {"val_loss": [1.0, 0.1, 0.003]},
                                    {"val_loss": [1.0, 0.004, 0.01]}], task="qm9", filter="ema")
    rows = tabulate([base, ema], 0.95)
    assert not rows[0].has_accuracy and rows[1].speedup_steps is None
    b, e = cells(rows)
    assert b["min val loss (median)"] == "0.0066" and b["loss min–max"] == "0.006–0.007" and b["at step (median)"] == "100"
    assert e["min val loss (median)"] == "0.0035" and e["at step (median)"] == "100"
    assert e["vs baseline"] == "0.53×"  # 0.0035 / 0.0066
    assert "reached 95%" not in b


def test_markdown_and_csv(tmp_path):
    base = variant(tmp_path, "baseline", [{}, {}], val_acc=reaching(None))
    ema = variant(tmp_path, "ema", [{"val_acc": reaching(900)}, {"val_acc": reaching(1000)}], filter="ema")
    rows = tabulate([base, ema], 0.95)
    write_markdown(rows, tmp_path / "comparison.md", 0.95, "title")
    write_csv(rows, tmp_path / "comparison.csv", 0.95)
    md = (tmp_path / "comparison.md").read_text()
    assert "| ema | 2/2 | 950 | 900–1,000 |" in md and "| baseline | 2/2 |" not in md
    assert "| ema | 1 | completed | 3,000 | 1,000 |" in md  # the per-run table
    with open(tmp_path / "comparison.csv", newline="") as f:
        b, e = list(csv.DictReader(f))
    assert float(b["steps_to_threshold_median_lo"]) == 3000 and b["steps_to_threshold_median_hi"] == "inf"
    assert float(e["steps_to_threshold_median_lo"]) == float(e["steps_to_threshold_median_hi"]) == 950
    assert float(e["speedup_steps_lo"]) == pytest.approx(3000 / 950) and e["speedup_steps_hi"] == "inf"
    assert e["statuses"] == "completed:2" and e["reached"] == "2"


def test_runs_group_into_variants_baseline_first(tmp_path):
    from conftest import write_run

    write_run(tmp_path / "ema-seed0", seed=0, filter="ema", val_acc=[0.1, 0.2])
    write_run(tmp_path / "ema-seed1", seed=1, filter="ema", val_acc=[0.1, 0.2])
    write_run(tmp_path / "ema-seed1-2", seed=1, filter="ema", val_acc=[0.1, 0.3])  # the same seed again
    write_run(tmp_path / "ema-seed2", seed=2, filter="ema", val_acc=[0.1, 0.2], settings={"filter.lamb": 5.0})
    write_run(tmp_path / "none-seed0", seed=0, filter="none", val_acc=[0.1, 0.2])
    runs = [read_run(p) for p in sorted(tmp_path.iterdir())]
    groups, warnings = group_variants(runs)
    assert [(name, [r.config["seed"] for r in g]) for name, g in groups] == [
        ("none", [0]), ("ema", [0, 1]), ("ema [filter.lamb=5.0]", [2])]
    assert warnings == [f"skipping {tmp_path / 'ema-seed1-2'}: it repeats seed 1 of {tmp_path / 'ema-seed1'}"]


def test_grokking_delay_column_with_censored_runs(tmp_path):
    """conftest's runs reach 100% training accuracy at step 100. Seeds reaching 95% validation at steps 300 and 500
    have delays 200 and 400 (×3, ×5); a seed that never does in 3,000 steps has a delay of at least 2,900. The
    median of (200, 400, ≥ 2,900) is 400 exactly."""
    rows = tabulate([variant(tmp_path, "ema", [{"val_acc": reaching(300)}, {"val_acc": reaching(500)},
                                                {"val_acc": reaching(None)}])])
    delays = [r.delay for r in rows[0].results]
    assert delays == [Bound(200, 200), Bound(400, 400), Bound(2900, INF)]
    assert rows[0].delay == Bound(400, 400) and rows[0].delay_ratio == Bound(5, 5)  # median of ×3, ×5, ≥ ×30
    headers, cells = columns(rows, 0.95)
    assert cells[0][headers.index("grokking delay (median)")] == "400 (×5)"
    rows = tabulate([variant(tmp_path / "b", "ema", [{"val_acc": reaching(None)}])])
    headers, cells = columns(rows, 0.95)
    assert cells[0][headers.index("grokking delay (median)")] == "≥ 2,900 (≥ ×30)"

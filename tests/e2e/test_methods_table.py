"""scripts/methods_table.py at a tiny budget: one compare per task over the methods' config files, and the table,
its CSV and its figure from the runs' metrics; a method a task cannot take is n/a, not a run."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_the_table_is_made_from_the_runs_of_one_compare_per_task(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "methods_table.py"), "--out", str(tmp_path),
                           "--tasks", "parity,modular", "--methods", "baseline,GrokAlign,EMA", "--seeds", "0",
                           "--scale", "0.003"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "methods.csv"))}
    assert list(rows) == ["baseline", "GrokAlign", "EMA"]
    assert rows["GrokAlign"]["modular"] == "n/a"  # the decoder reads tokens: no run was made for it
    assert not list((tmp_path / "modular").glob("*GrokAlign*"))
    assert rows["baseline"]["parity"] == "≥ 30 (0/1)"  # 30 steps (0.003 of 10,000): censored at the budget
    assert (tmp_path / "methods.png").stat().st_size > 0 and "| method | parity | modular |" in (
        tmp_path / "methods.md").read_text()
    grokalign = (tmp_path / "configs" / "parity" / "01-GrokAlign.toml").read_text()
    assert 'reg = "grokalign"' in grokalign and "train_eval_every = 1" in grokalign
    assert (tmp_path / "parity" / "01-GrokAlign-seed0" / "summary.json").exists()
    page = (tmp_path / "report.html").read_text()  # the table's page: its command, figure, and each task's page
    assert "methods_table.py --out" in page.split("<title>")[1].split("</title>")[0]
    assert page.count("data:image/png;base64,") == 1 and "<td>≥ 30 (0/1)</td>" in page
    for task in ("parity", "modular"):
        assert f'<a href="{task}/report.html">' in page and (tmp_path / task / "report.html").is_file()


def test_a_cell_is_the_median_over_seeds_censored_where_the_median_seed_did_not_get_there(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("methods_table", ROOT / "scripts" / "methods_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    assert table.cell([100, None, 300], 1000) == "300 (2/3)"
    assert table.cell([None, None, 5], 1000) == "≥ 1,000 (1/3)"
    assert table.cell([10, 20], 1000) == "15 (2/2)" and table.cell([10, None], 1000) == "≥ 1,000 (1/2)"
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.csv").write_text("step,train_acc,val_acc\n0,0.1,0.1\n10,0.995,0.5\n20,0.98,0.97\n"
                                     "30,1.0,0.96\n40,,0.99\n")
    assert table.steps_to_criterion(run, 0.95) == 30  # both at one evaluation: not 20 (train 0.98), not 40 (none)

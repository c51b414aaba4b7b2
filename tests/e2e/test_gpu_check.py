"""scripts/gpu_check.sh, the one command that runs every GPU check, in its CPU form (small sizes): what a lent
GPU will run is known to work before one comes."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_every_check_on_the_cpu_and_writes_one_report(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--out", str(tmp_path)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=400)
    report = (tmp_path / "report.md").read_text()
    assert done.returncode == 0, report[-3000:]
    sections = re.findall(r"^## (.+)$", report, re.M)
    assert len(sections) == 9, sections  # (the device check of every task runs on CUDA only)
    statuses = re.findall(r" — exit (\d+)", report)
    assert statuses == ["0"] * 9
    assert "orthograd,ema     4 completed" in report  # every filter, a stack of four
    assert "compare: 2 variants × 2 seeds" in report and "modular    eager" not in report  # (cpu: mnist only)
    assert re.search(r"mnist +compile +first +2 steps", report)


def test_a_bad_argument_is_the_usage_line(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "tpu", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "--device must be cuda or cpu, got tpu"
    assert not (tmp_path / "report.md").exists()

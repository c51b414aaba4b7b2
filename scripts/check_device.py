"""Every task and filter through the CLI on one device, on small data written here: a smoke test of the
device paths (pinned copies, CUDA events, the graph gather) that the CPU test suite cannot reach.

    python scripts/check_device.py --device cuda --out /tmp/check    # then read the table it prints

Prints one line per run (status, steps, the headline metric, ms/step, peak memory) and the published
modular EMA run (seed 0, --stop-at-acc 0.95) with its step count, to set beside the CPU's 910.
Exit status 1 if any run ended otherwise than expected.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fakedata import synthetic_mnist, write_csv, write_qm9  # noqa: E402  (the tests' small datasets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("/tmp/grokrun-device-check"))
    parser.add_argument("--skip-published", action="store_true", help="skip the 910-step modular EMA run")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if not (data / "MNIST").exists():
        synthetic_mnist(data)
        write_qm9(data, n=80)
    csv_file = data / "reviews.csv"
    if not csv_file.exists():
        write_csv(csv_file)
    small = {
        "modular": ["--op", "add", "--p", "23", "--train-frac", "0.8", "--width", "64", "--layers", "1",
                    "--batch-size", "128", "--lr", "3e-3", "--optimizer", "adamw", "--weight-decay", "1.0",
                    "--max-steps", "400", "--eval-every", "50"],
        "mnist": ["--data-dir", str(data), "--no-download", "--train-points", "200", "--max-steps", "400"],
        "imdb": ["--data-file", str(csv_file), "--size", "100", "--vocab-size", "40", "--seq-len", "24",
                 "--embedding-dim", "16", "--width", "32", "--layers", "1", "--init-scale", "1.0", "--lr", "3e-3",
                 "--max-steps", "400", "--batch-size", "25"],
        "qm9": ["--data-dir", str(data), "--no-download", "--size", "80", "--max-steps", "400", "--init-scale", "1.0",
                "--lr", "3e-3", "--batch-size", "10"],
    }
    runs = [(task, filt, extra) for task, extra in small.items() for filt in ("none", "ema", "ma")]
    if not args.skip_published:
        runs.append(("modular", "ema", ["--stop-at-acc", "0.95", "--max-steps", "2000", "--name", "published-ema"]))
    failures = 0
    print(f"{'task':8} {'filter':6} {'status':18} {'steps':>6}  {'result':34} {'ms/step':>8} {'peak MB':>8}  device")
    for task, filt, extra in runs:
        cmd = [sys.executable, "-m", "grokrun", "train", "--task", task, "--filter", filt, "--device", args.device,
               "--out", str(out / "runs"), "--quiet", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in done.stdout.splitlines() if l.startswith("run: ")), None)
        if line is None:
            print(f"{task:8} {filt:6} FAILED (exit {done.returncode}): {done.stderr.strip()[-300:]}")
            failures += 1
            continue
        s = json.loads((Path(line.split()[1]) / "summary.json").read_text())
        if s["best_val_acc"] is not None:
            result = f"best val acc {s['best_val_acc']:.3f}, 95% at {s['steps_to_val_acc']['0.95']}"
        else:
            result = f"min val loss {s['min_val_loss']:.4g}"
        print(f"{task:8} {filt:6} {s['status']:18} {s['steps']:>6}  {result:34} {s['ms_per_step']:>8.2f} "
              f"{s['peak_memory_mb']:>8.0f}  {s['device']}")
        failures += s["status"] not in ("completed", "stopped_at_target")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

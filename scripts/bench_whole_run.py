"""The whole run, not just the step: wall-clock of grokrun and of the published Grokfast modular script for
the same EMA run (seed 0, x·y mod 97, the published settings), back to back on this machine.

    git clone https://github.com/ironjr/grokfast /tmp/grokfast     # the published script, not part of grokrun
    python scripts/bench_whole_run.py --published /tmp/grokfast --steps 1000 [--repeats 1]

Each is timed as a whole process (start-up, data, training, evaluation, and whatever it writes: grokrun its
run directory and checkpoints, the script its plots every 100 epochs), one after the other, nothing else
running. Both evaluate once per epoch of 10 steps: the script the validation set (its training figures are
the running loss of the epoch's batches), grokrun the full training and validation sets. Prints the two
times and grokrun's / published ratio; below 1 means grokrun's whole run is faster. With --phases, one more
grokrun run (scripts/run_phases.py, after the timed pairs) breaks its whole process down by phase.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--published", type=Path, required=True, help="a checkout of github.com/ironjr/grokfast")
    ap.add_argument("--steps", type=int, default=1000, help="optimization steps (a multiple of 10: whole epochs)")
    ap.add_argument("--repeats", type=int, default=1, help="back-to-back pairs; the medians are reported")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--phases", action="store_true", help="then one more grokrun run, timed phase by phase")
    args = ap.parse_args()
    script = args.published / "main.py"
    if not script.is_file():
        sys.exit(f"--published {args.published}: no main.py there (clone https://github.com/ironjr/grokfast)")
    env = dict(os.environ)
    if args.device == "cpu":  # the published script takes a GPU wherever it sees one
        env["CUDA_VISIBLE_DEVICES"] = ""
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "results").mkdir()  # the script saves its plots and results there
        for i in range(args.repeats):
            theirs.append(timed([sys.executable, str(script), "--label", f"bench{i}", "--seed", "0",
                                 "--budget", str(args.steps), "--filter", "ema", "--alpha", "0.98", "--lamb", "2.0",
                                 "--weight_decay", "0.005"], work, env))
            ours.append(timed([sys.executable, "-m", "grokrun", *ours_args(args, work / "grokrun", f"bench{i}")],
                              Path.cwd(), env))
        if args.phases:
            phases = subprocess.run([sys.executable, str(Path(__file__).with_name("run_phases.py")),
                                     *ours_args(args, work / "grokrun", "phases")], env=env, check=True,
                                    stdout=subprocess.PIPE, text=True).stdout
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"whole run, {args.steps:,} EMA steps, seed 0, {args.device}, median of {args.repeats}:")
    print(f"  grokrun           {a:8.1f} s")
    print(f"  published script  {b:8.1f} s")
    print(f"  ratio grokrun / published: {a / b:.2f}")
    if args.phases:
        print("grokrun's run by phase (one more run):")
        for line in phases.splitlines():
            if line.startswith("phase\t"):
                _, phase, seconds, share = line.split("\t")
                print(f"  {phase:46s} {float(seconds):7.2f} s {float(share):5.1f}%")


def ours_args(args, out: Path, name: str) -> list[str]:
    return ["train", "--task", "modular", "--filter", "ema", "--seed", "0", "--max-steps", str(args.steps),
            "--device", args.device, "--quiet", "--out", str(out), "--name", name]


if __name__ == "__main__":
    main()

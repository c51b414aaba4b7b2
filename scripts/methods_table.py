"""The methods table: the ways to grok faster that researchers compare, on four tasks, over seeds (issue 27).

    python scripts/methods_table.py --out results/methods --mnist-dir ../shared/data/mnist     # the table
    python scripts/methods_table.py --out /tmp/m --seeds 0 --scale 0.02 --tasks add-quadratic   # a smoke run

For each task, one config file per method (written under OUT/configs/<task>/, each a run's full settings) and
one ``grokrun compare`` over them (the baseline first), so every run is an ordinary run directory and the
command can be run again to continue. Then, per task and method, the steps to the task's criterion as
GrokAlign's harness states it (training accuracy above 99% and test accuracy at the task's threshold, at the
same evaluation; the training set is scored at every evaluation), the median over the seeds, censored at the
budget when the median seed did not get there; OUT/methods.md, OUT/methods.csv and OUT/methods.png (methods ×
tasks, median steps, censored cells marked). A method a task cannot take (GrokAlign on the decoder, whose input
is tokens) is "n/a". Settings not tuned per task are the methods' published ones, named in METHODS.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# task -> (its settings, criterion on test accuracy, budget in steps at --scale 1). Budgets are sized for a
# few hours on two CPU cores with three seeds; the modular baseline groks far later (~40k steps) and is censored.
TASKS = {
    # Grokfast: x·y mod 97, decoder, 50% train; each run stops at the threshold (its steps are ~40 ms each)
    "modular": ({"task": "modular", "train.stop_at_acc": 0.95, "train.snapshots": "off"}, 0.95, 2000),
    # GrokAlign's second task (Gromov's network): x+y mod 61, 256 quadratic units on one-hot a and b, 30% train,
    # batch 32; squared error and AdamW at 5e-3 (with cross-entropy at 1e-3 no method left 0% test accuracy in
    # 5,000 steps: the memorizing solution scores exactly 0 on held-out pairs)
    "add-quadratic": ({"task": "modular", "modular.op": "add", "modular.p": 61, "modular.arch": "mlp",
                       "modular.layers": 1, "modular.width": 256, "modular.activation": "quadratic",
                       "modular.train_frac": 0.3, "modular.loss": "mse", "train.batch_size": 32,
                       "optim.name": "adamw", "optim.lr": 5e-3}, 0.95, 5000),
    "parity": ({"task": "parity", "parity.n_bits": 40, "parity.k": 3, "parity.depth": 3, "parity.width": 200},
               0.95, 10000),
    "mnist": ({"task": "mnist", "mnist.train_points": 1024, "mnist.download": False}, 0.85, 10000),
}
# method -> settings on top of the task's; "{lr}" is the task's learning rate
METHODS = {
    "baseline": {},
    "weight decay": {"optim.weight_decay": 1.0, "optim.name": "adamw"},
    "decay to init": {"optim.weight_decay": 1.0, "optim.name": "adamw", "optim.decay_to": "init"},
    "dropout": {"model.dropout": 0.1},
    "gradient noise": {"optim.grad_noise": 0.01},
    "EMA": {"filter.name": "ema"},  # Grokfast's modular settings: alpha 0.98, lamb 2
    "MA": {"filter.name": "ma"},  # window 100, lamb 5
    "⊥Grad": {"filter.name": "orthograd"},
    "StableMax": {"loss": "stablemax"},
    "GrokAlign": {"train.reg": "grokalign", "train.reg_weight": 0.001},
    "Muon": {"optim.name": "muon"},
    "GrokFastAdamW": {"optim.name": "grokfastadamw"},
    "Lion": {"optim.name": "lion", "optim.lr": "{lr/10}"},  # Lion's advice: a tenth of AdamW's rate
    "EMA lr/(1+λ)": {"filter.name": "ema", "filter.normalize_lr": True},
    "baseline lr×(1+λ)": {"optim.lr": "{lr*3}"},  # the lr-matched baseline of EMA's lamb 2
}


def settings(task: str, method: str, lr: float, budget: int) -> dict | None:
    base, _, _ = TASKS[task]
    extra = dict(METHODS[method])
    if "loss" in extra:  # the task's own loss setting
        extra[f"{base['task']}.loss"] = extra.pop("loss")
    if method == "GrokAlign" and base["task"] == "modular" and base.get("modular.arch", "decoder") == "decoder":
        return None  # the decoder reads tokens: no input Jacobian
    for key, value in extra.items():
        if isinstance(value, str) and value.startswith("{lr"):
            extra[key] = {"{lr/10}": lr / 10, "{lr*3}": lr * 3}[value]
    return {**base, "train.max_steps": budget, "train.train_eval_every": 1, **extra}


def nested(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *sections, last = key.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[last] = value
    return out


def toml(data: dict, prefix: str = "") -> str:
    top = [f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
           for k, v in data.items() if not isinstance(v, dict)]
    parts = ["\n".join(top)] if top else []
    for k, v in data.items():
        if isinstance(v, dict):
            parts.append(f"[{prefix}{k}]\n" + toml(v, f"{prefix}{k}.").strip())
    return "\n\n".join(parts) + "\n"


def steps_to_criterion(run_dir: Path, threshold: float) -> int | None:
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            train, val = row["train_acc"], row["val_acc"]
            if train and val and float(train) > 0.99 and float(val) >= threshold:
                return int(row["step"])
    return None


def finished(run_dir: Path) -> bool:
    """Whether the run ended (its budget, its target or a divergence): an interrupted one is not counted."""
    try:
        return json.loads((run_dir / "summary.json").read_text())["status"] != "interrupted"
    except (OSError, ValueError, KeyError):
        return False


def cell(found: list[int | None], budget: int) -> str:
    """The median over the seeds of the steps to the criterion, a seed that did not get there counting as more
    than any (so a median among those is "≥ the budget"), and how many got there: "1,200 (2/3)"."""
    median = statistics.median(s if s is not None else math.inf for s in found)
    return (f"≥ {budget:,}" if median == math.inf else f"{median:,.0f}") + \
        f" ({sum(s is not None for s in found)}/{len(found)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/methods"))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget (a smoke run: 0.02)")
    parser.add_argument("--mnist-dir", default="data")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--tabulate", action="store_true", help="train nothing: the table of the runs there are")
    args = parser.parse_args()
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    started, cells, budgets = time.time(), {}, {}
    for task in tasks:
        base, threshold, budget = TASKS[task]
        budget = budgets[task] = max(10, int(budget * args.scale))
        lr = base.get("optim.lr", 1e-3)
        folder = args.out / "configs" / task
        folder.mkdir(parents=True, exist_ok=True)
        files, names = [], {}
        for i, method in enumerate(methods):
            flat = settings(task, method, lr, budget)
            if flat is None:
                cells[task, method] = "n/a"
                continue
            if base["task"] == "mnist":
                flat["mnist.data_dir"] = args.mnist_dir
            if args.jobs > 1:  # (each of the parallel runs on its own core)
                flat["threads"] = 1
            path = folder / f"{i:02d}-{method.replace(' ', '_').replace('/', '÷').replace(',', '')}.toml"
            path.write_text(f"# {task} · {method} (scripts/methods_table.py)\n" + toml(nested(flat)))
            files.append(path)
            names[path.stem] = method
        command = [sys.executable, "-m", "grokrun", "compare", *map(str, files), "--seeds", args.seeds,
                   "--threshold", str(threshold), "--jobs", str(args.jobs), "--out", str(args.out / task), "--quiet"]
        if not args.tabulate:
            print("$", " ".join(command[1:]), flush=True)
            subprocess.run(command, check=False)
        for stem, method in names.items():
            found = [steps_to_criterion(d, threshold) for d in sorted((args.out / task).glob(f"{stem}-seed*"))
                     if finished(d)]
            if not found:
                cells[task, method] = "not run"
                continue
            cells[task, method] = cell(found, budget)
    write_outputs(args.out, tasks, methods, cells, budgets, time.time() - started)
    write_page(args.out, tasks, methods, cells, budgets, " ".join(["python", *map(shlex.quote, sys.argv)]))
    return 0


def write_outputs(out: Path, tasks: list[str], methods: list[str], cells: dict, budgets: dict,
                  seconds: float) -> None:
    header = "| method | " + " | ".join(tasks) + " |"
    lines = [header, "|" + " --- |" * (len(tasks) + 1)]
    lines += [f"| {m} | " + " | ".join(cells.get((t, m), "") for t in tasks) + " |" for m in methods]
    (out / "methods.md").write_text("\n".join(lines) + f"\n\n{seconds / 60:.0f} min in all.\n")
    with open(out / "methods.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", *tasks])
        w.writerows([m, *(cells.get((t, m), "") for t in tasks)] for m in methods)
    figure(out / "methods.png", tasks, methods, cells, budgets)
    print("\n".join(lines))


def write_page(out: Path, tasks: list[str], methods: list[str], cells: dict, budgets: dict, command: str) -> None:
    """OUT/report.html: the command, each task's setting and criterion, the figure and the table, each task's
    column linked to its comparison's own report.html (every method's curves, every run and its figures)."""
    from html import escape

    from grokrun.report import inline_figure

    head = "".join(f'<th><a href="{escape(t)}/report.html">{escape(t)}</a></th>' if (out / t / "report.html").is_file()
                   else f"<th>{escape(t)}</th>" for t in tasks)
    body = "".join(f"<tr><td>{escape(m)}</td>" + "".join(f"<td>{escape(cells.get((t, m), ''))}</td>" for t in tasks)
                   + "</tr>\n" for m in methods)
    criteria = "".join(f"<li><b>{escape(t)}</b>: {escape(', '.join(f'{k} = {v}' for k, v in TASKS[t][0].items()))}; "
                       f"train &gt; 99% and test ≥ {TASKS[t][1]:g} at one evaluation; budget {budgets[t]:,} steps</li>"
                       for t in tasks)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(command)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} h1{{font-size:1.1em}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:2px 8px}} td{{text-align:right}}
td:first-child{{text-align:left}} img{{max-width:100%}}</style></head><body>
<h1><code>{escape(command)}</code></h1>
<p>Median steps over the seeds to each task's criterion; "≥ N": the median seed did not get there within the budget
N; (k/n): how many seeds did; n/a: the method does not apply to the task. A task's name opens its comparison: every
method's curves, every run and its figures.</p>
<ul>{criteria}</ul>
{inline_figure(out / "methods.png")}
<table><tr><th>method</th>{head}</tr>
{body}</table>
</body></html>
"""
    (out / "report.html").write_text(page)


def figure(path: Path, tasks: list[str], methods: list[str], cells: dict, budgets: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.full((len(methods), len(tasks)), np.nan)  # log10 of the median's share of the task's budget
    for (t, m), text in cells.items():
        number = text.split(" (")[0].replace(",", "")
        if number.isdigit():
            values[methods.index(m), tasks.index(t)] = np.log10(int(number) / budgets[t])
    fig, ax = plt.subplots(figsize=(2.5 + 1.7 * len(tasks), 0.9 + 0.4 * len(methods)))
    ax.set_facecolor("#d9d9d9")  # censored and n/a cells: grey, not a colour of the scale
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=-2, vmax=0)
    for (t, m), text in cells.items():
        light = text.split(" (")[0].replace(",", "").isdigit() and values[methods.index(m), tasks.index(t)] < -1
        ax.text(tasks.index(t), methods.index(m), text, ha="center", va="center", fontsize=7,
                color="white" if light else "black")
    fig.colorbar(image, ax=ax, label="log10(median steps / budget)")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(methods)), methods)
    ax.set_title("median steps to train > 99% and test ≥ the task's threshold (≥: censored; reached/seeds)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

"""THE training loop, shared by every task: forward, backward, gradient filter, optimizer step.

    run_dir, summary = train(resolve(None, {"task": "modular", "filter.name": "ema"}))

A task supplies the model, its data on the device, a loss and an evaluation (grokrun.tasks.base.Task);
everything else lives here, once. Between evaluations the loop never waits for the device: losses stay
tensors, divergence is a flag on the device, and step times are CUDA events read at the next evaluation.
"""

from __future__ import annotations

import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import grokrun
from grokrun.config import ConfigError, OptimConfig, RunConfig, TrainConfig, to_dict
from grokrun.filters import FILTERS
from grokrun.measure import StepTimer, peak_memory_mb, reset_peak_memory, synchronize
from grokrun.results import RunWriter, metric_summary, new_run_dir
from grokrun.tasks import task_module


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu or --device auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available here; use --device cpu or --device auto")
    return torch.device(name)


def make_optimizer(o: OptimConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if o.name == "adam":  # weight decay coupled into the gradient (L2), as the Grokfast modular script
        return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.beta1, weight_decay=o.weight_decay)


def warmup_factor(warmup_steps: int):
    """Learning-rate factor for LambdaLR, whose counter is 0 at step 1: step s uses min((s - 1) / warmup, 1).

    This is the published schedule (``update / 10`` over the first 10 updates): step 1 runs at rate 0,
    moving no weight while Adam's moments and the gradient filter still take in its gradient, and step
    warmup + 1 is the first at the full rate. Kept exactly, so a seed follows the published trajectory.
    """
    return lambda i: min(i / warmup_steps, 1.0) if warmup_steps else 1.0


def eval_steps(cfg: TrainConfig, steps_per_epoch: int) -> set[int]:
    """The steps after which to evaluate (besides step 0, before training); always the last one.

    linear: every ``eval_every`` steps (0: once per epoch). log: every step below 30, every 10th below
    150, then ``eval_points`` steps spaced evenly in log(step) from 150 to the budget, as Omnigrok's
    MNIST script is read on a log axis: fine where grokking usually happens, sparse later.
    """
    n = cfg.max_steps
    if cfg.eval_schedule == "linear":
        every = cfg.eval_every or steps_per_epoch
        steps = set(range(every, n + 1, every))
    else:
        steps = set(range(1, 30)) | set(range(30, 150, 10))
        if n > 150:
            steps |= {round(150 * (n / 150) ** (i / (cfg.eval_points - 1))) for i in range(cfg.eval_points)}
    return {s for s in steps if s <= n} | {n}


def train(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one run to its budget (or target), writing its run directory. Returns (run dir, summary)."""
    device = pick_device(cfg.device)
    param_dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16" else nullcontext()
    torch.manual_seed(cfg.seed)
    task = task_module(cfg.task).build(cfg, device, param_dtype)  # may raise ConfigError: no run dir yet
    model = task.model
    params = list(model.parameters())
    optimizer = make_optimizer(cfg.optim, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor(cfg.optim.warmup_steps))
    grad_filter = FILTERS[cfg.filter.name].from_config(cfg.filter)
    evals = eval_steps(cfg.train, task.batches.steps_per_epoch)
    max_steps, target = cfg.train.max_steps, cfg.train.stop_at_acc

    run_dir = new_run_dir(Path(cfg.out), cfg.name or f"{cfg.task}-{cfg.filter.name}-seed{cfg.seed}")
    writer = RunWriter(run_dir, to_dict(cfg))
    timer = StepTimer(device)
    reset_peak_memory(device)
    wall = 0.0  # training time so far, evaluation excluded
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def evaluate(step: int) -> dict[str, Any]:
        model.eval()
        with autocast:
            train_loss, train_acc = task.evaluate("train")
            val_loss, val_acc = task.evaluate("val")
        model.train()
        with torch.no_grad():
            weight_norm = torch.nn.utils.get_total_norm(params)  # L2 norm of all parameters together
        metrics = [train_loss, train_acc, val_loss, val_acc, weight_norm]
        known = [m for m in metrics if m is not None]
        values = iter(torch.stack([m.double() for m in known]).tolist())  # the one sync
        row = dict(zip(("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm"),
                       (None if m is None else next(values) for m in metrics)), step=step, wall_s=wall)
        writer.log(row)
        return row

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[stats]}"),
                        TimeElapsedColumn(), console=console, disable=quiet, transient=False)
    status, step = "completed", 0
    with progress:
        bar = progress.add_task(f"{cfg.task} {cfg.filter.name} seed {cfg.seed}", total=max_steps,
                                rate="", stats="")
        row = evaluate(0)
        t0 = time.perf_counter()
        try:
            for step in range(1, max_steps + 1):
                timer.start()
                idx = task.batches.next()
                with autocast:
                    loss = task.loss(idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.clip_grad:  # before the filter, as the Grokfast IMDb script; no host sync
                    torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
                grad_filter.apply(params, amplify=step > cfg.filter.start)
                optimizer.step()
                scheduler.step()
                nonfinite |= ~torch.isfinite(loss.detach())
                timer.stop()
                if step not in evals:
                    continue
                # Evaluation point: the only place the loop waits for the device.
                synchronize(device)
                wall += time.perf_counter() - t0
                timer.flush()
                row = evaluate(step)
                progress.update(bar, completed=step, rate=f"{step / wall:.1f} it/s", stats=_stats(row))
                if nonfinite.item():
                    status = "diverged"
                    break
                if target is not None and row["val_acc"] is not None and row["val_acc"] >= target:
                    status = "stopped_at_target"
                    break
                t0 = time.perf_counter()
        except KeyboardInterrupt:
            status = "interrupted"
            step -= 1  # the step in flight did not finish

    summary = {
        "status": status, "task": cfg.task, "filter": cfg.filter.name, "seed": cfg.seed,
        "steps": step, "max_steps": max_steps,
        **metric_summary(writer.rows),
        "wall_s": wall, "ms_per_step": timer.median_ms(), "peak_memory_mb": peak_memory_mb(device),
        "final": {k: row[k] for k in ("step", "train_loss", "train_acc", "val_loss", "val_acc")},
        "device": _device_name(device), "dtype": cfg.dtype,
        "versions": {"grokrun": grokrun.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    writer.finish(summary)
    return run_dir, summary


def _stats(row: dict[str, Any]) -> str:
    if row["val_acc"] is None:
        return f"loss train {row['train_loss']:.3g} val {row['val_loss']:.3g}"
    return (f"acc train {row['train_acc']:.3f} val {row['val_acc']:.3f} · "
            f"loss train {row['train_loss']:.3g} val {row['val_loss']:.3g}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

"""THE training loop, shared by every task: forward, backward, gradient filter, optimizer step.

    run_dir, summary = train(resolve(None, {"task": "modular", "filter.name": "ema"}))

A task supplies the model, its data on the device, a loss and an evaluation (grokrun.tasks.base.Task);
everything else lives here, once. Between evaluations the loop never waits for the device: losses stay
tensors, divergence is a flag on the device, and step times are CUDA events read at the next evaluation.
"""

from __future__ import annotations

import platform
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import grokrun
from grokrun import checkpoint
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


class StoppedAtOnce(Exception):
    """A second interrupt: the run stopped where it was, without a summary."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@contextmanager
def stop_signals():
    """Ctrl-C and SIGTERM ask the loop to stop after the current step; a second one stops at once."""
    state = SimpleNamespace(requested=None)

    def handler(signum, frame):
        if state.requested is not None:
            raise KeyboardInterrupt
        state.requested = signal.Signals(signum).name

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield state
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(cfg: RunConfig, quiet: bool = False, console: Console | None = None,
          resume: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one run to its budget (or target), writing its run directory. Returns (run dir, summary).

    With ``resume``, continue that run directory from its checkpoint, as if it had never stopped.
    """
    device = pick_device(cfg.device)
    param_dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16" else nullcontext()
    saved = checkpoint.load(resume) if resume is not None else None  # may raise ConfigError
    torch.manual_seed(cfg.seed)
    task = task_module(cfg.task).build(cfg, device, param_dtype)  # may raise ConfigError: no run dir yet
    model = task.model
    params = list(model.parameters())
    optimizer = make_optimizer(cfg.optim, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor(cfg.optim.warmup_steps))
    grad_filter = FILTERS[cfg.filter.name].from_config(cfg.filter)
    evals = eval_steps(cfg.train, task.batches.steps_per_epoch)
    max_steps, target = cfg.train.max_steps, cfg.train.stop_at_acc
    save_every = cfg.train.checkpoint_every or max(1, max_steps // 10)
    fingerprint = task.fingerprint()
    timer = StepTimer(device)
    wall, start, peak_before = 0.0, 0, 0.0  # wall: training time so far, evaluation excluded
    if saved is None:
        run_dir = new_run_dir(Path(cfg.out), cfg.name or f"{cfg.task}-{cfg.filter.name}-seed{cfg.seed}")
        writer = RunWriter(run_dir, to_dict(cfg))
    else:
        if saved["fingerprint"] != fingerprint:
            raise ConfigError(f"the data of {resume} differ from its checkpoint's (the dataset files changed?); "
                              "it cannot be resumed")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        grad_filter.load_state_dict(_to(saved["filter"], device))
        task.batches.load_state_dict(saved["batches"])
        checkpoint.set_rng_states(saved["rng"])
        start, wall, timer.ms, peak_before = saved["step"], saved["wall_s"], saved["ms"], saved["peak_memory_mb"]
        run_dir = Path(resume)
        (run_dir / "summary.json").unlink(missing_ok=True)  # running again: no stale status
        writer = RunWriter.resume(run_dir, upto=start)
    reset_peak_memory(device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss or grad

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

    def save_checkpoint(step: int) -> None:
        checkpoint.save(run_dir / checkpoint.NAME, {
            "step": step, "wall_s": wall, "ms": timer.ms, "fingerprint": fingerprint,
            "peak_memory_mb": max(peak_before, peak_memory_mb(device)),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "filter": grad_filter.state_dict(), "batches": task.batches.state_dict(), "rng": checkpoint.rng_states(),
        })

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[stats]}"),
                        TimeElapsedColumn(), console=console, disable=quiet, transient=False)
    status, step, diverged_at = "completed", start, None
    try:
        with progress, stop_signals() as stop:
            bar = progress.add_task(f"{cfg.task} {cfg.filter.name} seed {cfg.seed}", total=max_steps,
                                    completed=start, rate="", stats="")
            row = evaluate(0) if saved is None else writer.rows[-1]
            t0 = time.perf_counter()
            for step in range(start + 1, max_steps + 1):
                timer.start()
                idx = task.batches.next()
                with autocast:
                    loss = task.loss(idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.clip_grad:  # before the filter, as the Grokfast IMDb script; no host sync
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
                else:
                    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
                grad_filter.apply(params, amplify=step > cfg.filter.start)
                optimizer.step()
                scheduler.step()
                bad = ~torch.isfinite(loss.detach() + grad_norm)
                first_bad = torch.where(bad & (first_bad < 0), step, first_bad)  # on the device: no wait
                timer.stop()
                is_eval, is_save = step in evals, step % save_every == 0 or step == max_steps
                if not (is_eval or is_save or stop.requested):
                    continue
                # The only places the loop waits for the device: evaluations, checkpoints, a stop request.
                synchronize(device)
                wall += time.perf_counter() - t0
                timer.flush()
                if is_eval:
                    row = evaluate(step)
                    progress.update(bar, completed=step, rate=f"{step / max(wall, 1e-9):.1f} it/s", stats=_stats(row))
                bad_step = first_bad.item()
                if bad_step >= 0:
                    status, diverged_at = "diverged", bad_step
                    break
                if is_eval and target is not None and row["val_acc"] is not None and row["val_acc"] >= target:
                    status = "stopped_at_target"
                    break
                if stop.requested:
                    status = "interrupted"
                    break
                if is_save:
                    save_checkpoint(step)
                t0 = time.perf_counter()
            if status in ("stopped_at_target", "interrupted"):
                save_checkpoint(step)
    except KeyboardInterrupt:  # a second interrupt: stop at once, leaving no summary
        writer.close()
        raise StoppedAtOnce(run_dir) from None

    summary = {
        "status": status, "task": cfg.task, "filter": cfg.filter.name, "seed": cfg.seed,
        "steps": step, "max_steps": max_steps, "diverged_at": diverged_at,
        **metric_summary(writer.rows),
        "wall_s": wall, "ms_per_step": timer.median_ms(),
        "peak_memory_mb": max(peak_before, peak_memory_mb(device)),
        "final": {k: row.get(k) for k in ("step", "train_loss", "train_acc", "val_loss", "val_acc")},
        "device": _device_name(device), "dtype": cfg.dtype,
        "versions": {"grokrun": grokrun.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    writer.finish(summary)
    return run_dir, summary


def _to(state: Any, device: torch.device) -> Any:
    """A checkpoint's filter state (loaded on the CPU) on the run's device."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to(v, device) for k, v in state.items()}
    return state


def _stats(row: dict[str, Any]) -> str:
    if row["val_acc"] is None:
        return f"loss train {row['train_loss']:.3g} val {row['val_loss']:.3g}"
    return (f"acc train {row['train_acc']:.3f} val {row['val_acc']:.3f} · "
            f"loss train {row['train_loss']:.3g} val {row['val_loss']:.3g}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

"""THE training loop, shared by every task: forward, backward, gradient filter, optimizer step.

    run_dir, summary = train(resolve(None, {"task": "modular", "filter.name": "ema"}))

A task supplies the model, its data on the device, a loss and an evaluation (grokrun.tasks.base.Task);
everything else lives here, once, in the order a run goes: set-up, restore (when resuming), the loop,
evaluation, checkpoint and summary. Between evaluations the loop never waits for the device: losses stay
tensors, divergence is a flag on the device, and step times are CUDA events read at the next evaluation.
"""

from __future__ import annotations

import platform
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import grokrun
from grokrun import checkpoint
from grokrun.config import TrainConfig, to_dict
from grokrun.errors import UserError
from grokrun.filters import FILTERS, describe_variant
from grokrun.measure import StepTimer, peak_memory_mb, reset_peak_memory, synchronize
from grokrun.optim import make_optimizer, warmup_factor
from grokrun.results import (CHECKPOINT, CONFIG, METRICS, SUMMARY, RunWriter, differences, first_difference,
                             metric_summary, new_run_dir)
from grokrun.tasks import task


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or --device auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available here; use --device cpu or --device auto")
    return torch.device(name)


class EverySteps:
    """Every ``every`` steps up to ``last``, and ``last`` itself: a membership test by arithmetic, so a long
    budget costs no memory. Iterates in order, like the set the log schedule gives."""

    def __init__(self, every: int, last: int):
        self.every, self.last = every, last

    def __contains__(self, step: int) -> bool:
        return 0 < step <= self.last and (step % self.every == 0 or step == self.last)

    def __iter__(self):
        yield from range(self.every, self.last + 1, self.every)
        if self.last % self.every:
            yield self.last


def eval_steps(cfg: TrainConfig, steps_per_epoch: int) -> EverySteps | set[int]:
    """The steps after which to evaluate (besides step 0, before training); always the last one.

    linear: every ``eval_every`` steps (0: once per epoch). log: every step below 30, every 10th below
    150, then ``eval_points`` steps spaced evenly in log(step) from 150 to the budget, as Omnigrok's
    MNIST script is read on a log axis: fine where grokking usually happens, sparse later.
    """
    n = cfg.max_steps
    if cfg.eval_schedule == "linear":
        return EverySteps(cfg.eval_every or steps_per_epoch, n)
    steps = set(range(1, 30)) | set(range(30, 150, 10))
    if n > 150:
        steps |= {round(150 * (n / 150) ** (i / (cfg.eval_points - 1))) for i in range(cfg.eval_points)}
    return {s for s in steps if s <= n} | {n}


class StoppedAtOnce(Exception):
    """A second interrupt: the run stopped where it was, without a summary."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


class StopSignals:
    """Ctrl-C and SIGTERM ask the loop to stop after the current step; a second one stops at once, except
    inside ``shielded()`` (a checkpoint being written), which it lets finish first."""

    def __init__(self):
        self.requested: str | None = None
        self._shielded, self._again = False, False

    def handler(self, signum, frame) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum).name
        elif self._shielded:
            self._again = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def shielded(self):
        self._shielded = True
        try:
            yield
        finally:
            self._shielded = False
        if self._again:
            raise KeyboardInterrupt


@contextmanager
def stop_signals():
    """Install StopSignals' handler for Ctrl-C and SIGTERM while the loop runs."""
    state = StopSignals()
    handler = state.handler

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield state
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(cfg, quiet: bool = False, console: Console | None = None,
          resume: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one run to its budget (or target), writing its run directory. Returns (run dir, summary).

    With ``resume``, continue that run directory from its checkpoint, as if it had never stopped.
    """
    saved = checkpoint.load(resume) if resume is not None else None  # may raise UserError: nothing written yet
    run = Run(cfg)  # may raise UserError (no data, no device): still nothing written
    if saved is None:
        run.start()
    else:
        run.restore(saved, Path(resume))
    status, step, diverged_at = run.loop(quiet, console)
    return run.run_dir, run.finish(status, step, diverged_at)


class Run:
    """One training run: its model, data, optimizer, filter and run directory, and the loop over them."""

    # --- set-up -----------------------------------------------------------------------------------------

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        param_dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                         else nullcontext())
        torch.manual_seed(cfg.seed)
        self.task = task(cfg.task).build(cfg, self.device, param_dtype)
        self.model = self.task.model
        self.params = list(self.model.parameters())
        self.optimizer = make_optimizer(cfg.optim, self.params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_factor(cfg.optim.warmup_steps))
        self.grad_filter = FILTERS[cfg.filter.name].from_config(cfg.filter)
        self.evals = eval_steps(cfg.train, self.task.batches.steps_per_epoch)
        self.save_every = cfg.train.checkpoint_every or max(1, cfg.train.max_steps // 10)
        self.fingerprint = self.task.fingerprint()
        self.timer = StepTimer(self.device)
        self.stop = StopSignals()  # replaced by the live one while the loop runs
        self.wall, self.start_step, self.peak_before = 0.0, 0, 0.0  # wall: training time, evaluation excluded

    def start(self) -> None:
        """A new run directory, with the config in it."""
        cfg = self.cfg
        self.run_dir = new_run_dir(Path(cfg.out), cfg.name or f"{cfg.task}-{cfg.filter.name}-seed{cfg.seed}")
        self.writer = RunWriter(self.run_dir, to_dict(cfg))

    def restore(self, saved: dict[str, Any], run_dir: Path) -> None:
        """Continue ``run_dir`` from its checkpoint: every state as it was at the checkpoint's step.

        The checkpoint must belong to this run: written with the settings its config.json holds (a
        checkpoint from another run, or a config edited since, is refused) and on the same data.
        Nothing in the run directory changes until all of it has been read back.
        """
        if "settings" in saved:  # (checkpoints written before settings were stored have only the data's)
            diff = differences(saved["settings"], _resumable_settings(self.cfg))
            if diff:  # name the most telling difference: the task or the filter before their settings
                key, was, now, more = first_difference(diff, prefer=("task", "filter.name", "optim.name"))
                raise UserError(f"{run_dir / CHECKPOINT} was written by a run with {key} = {was!r}, but {CONFIG} "
                                f"there says {now!r}{more}; a checkpoint resumes only the run that wrote it "
                                f"(restore {CONFIG}, or start a new run with --config)")
        if saved["fingerprint"] != self.fingerprint:
            raise UserError(f"the data of {run_dir} differ from its checkpoint's (the dataset files changed?); "
                            "it cannot be resumed")
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.grad_filter.load_state_dict(_to(saved["filter"], self.device))
            self.task.batches.load_state_dict(saved["batches"])
            checkpoint.set_rng_states(saved["rng"])
            self.start_step, self.wall, self.timer.ms = saved["step"], saved["wall_s"], saved["ms"]
            self.peak_before = saved["peak_memory_mb"]
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            why = " ".join(str(e).split())[:120]
            raise UserError(f"{run_dir / CHECKPOINT} does not fit this run ({type(e).__name__}: {why}); "
                            "it cannot be resumed") from None
        try:
            self.writer = RunWriter.resume(run_dir, upto=self.start_step)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {run_dir / METRICS} ({e}); the run cannot be resumed") from None
        self.run_dir = run_dir
        (run_dir / SUMMARY).unlink(missing_ok=True)  # running again: no stale status

    # --- the loop ---------------------------------------------------------------------------------------

    def loop(self, quiet: bool, console: Console | None) -> tuple[str, int, int | None]:
        """Train from the start step to the budget, the target or a stop. Returns (status, last step, the
        step where the loss or a gradient first became non-finite, or None)."""
        cfg, task, params = self.cfg, self.task, self.params
        max_steps, target = cfg.train.max_steps, cfg.train.stop_at_acc
        reset_peak_memory(self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)  # first non-finite step
        progress = ProgressReport(f"{cfg.task} {cfg.filter.name} seed {cfg.seed}", max_steps, self.start_step,
                                  quiet, console)
        status, step, diverged_at = "completed", self.start_step, None
        try:
            with progress, stop_signals() as stop:
                self.stop = stop
                row = self.evaluate(0) if self.start_step == 0 else self.writer.rows[-1]
                t0 = time.perf_counter()
                for step in range(self.start_step + 1, max_steps + 1):
                    self.timer.start()
                    idx = task.batches.next()
                    with self.autocast:
                        loss = task.loss(idx)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.optim.clip_grad:  # before the filter, as the Grokfast IMDb script; no host sync
                        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
                    else:
                        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
                    self.grad_filter.apply(params, amplify=step > cfg.filter.start)
                    self.optimizer.step()
                    self.scheduler.step()
                    bad = ~torch.isfinite(loss.detach() + grad_norm)
                    first_bad = torch.where(bad & (first_bad < 0), step, first_bad)  # on the device: no wait
                    self.timer.stop()
                    is_eval, is_save = step in self.evals, step % self.save_every == 0 or step == max_steps
                    if not (is_eval or is_save or stop.requested):
                        continue
                    # The only places the loop waits for the device: evaluations, checkpoints, a stop request.
                    synchronize(self.device)
                    self.wall += time.perf_counter() - t0
                    self.timer.flush()
                    if is_eval:
                        row = self.evaluate(step)
                        progress.update(step, self.wall, row)
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
                        self.save_checkpoint(step)
                    t0 = time.perf_counter()
                if status in ("stopped_at_target", "interrupted"):
                    self.save_checkpoint(step)
        except KeyboardInterrupt:  # a second interrupt: stop at once, leaving no summary
            self.writer.close()
            raise StoppedAtOnce(self.run_dir) from None
        return status, step, diverged_at

    # --- evaluation, checkpoint, summary ------------------------------------------------------------------

    def evaluate(self, step: int) -> dict[str, Any]:
        """One metrics row: loss and accuracy on the full validation set, the weight norm, and at every
        ``train_eval_every``-th evaluation (counting step 0's) and the budget's last step, on the full
        training set too; its cells are empty in the other rows. Thresholds are on validation accuracy, so
        they keep every evaluation; the training set, as large, is the other half of an evaluation's cost."""
        scored = len(self.writer.rows) % self.cfg.train.train_eval_every == 0 or step == self.cfg.train.max_steps
        self.model.eval()
        with torch.no_grad():
            with self.autocast:
                train_loss, train_acc = self.task.evaluate("train") if scored else (None, None)
                val_loss, val_acc = self.task.evaluate("val")
            weight_norm = torch.nn.utils.get_total_norm(self.params)  # L2 norm of all parameters together
        self.model.train()
        metrics = [train_loss, train_acc, val_loss, val_acc, weight_norm]
        known = [m for m in metrics if m is not None]
        values = iter(torch.stack([m.double() for m in known]).tolist())  # the one sync
        row = dict(zip(("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm"),
                       (None if m is None else next(values) for m in metrics)), step=step, wall_s=self.wall)
        self.writer.log(row)
        return row

    def save_checkpoint(self, step: int) -> None:
        """Write checkpoint.pt; a second Ctrl-C meanwhile waits until it is whole."""
        with self.stop.shielded():
            self._write_checkpoint(step)

    def _write_checkpoint(self, step: int) -> None:
        checkpoint.save(self.run_dir, {
            "step": step, "wall_s": self.wall, "ms": self.timer.ms, "fingerprint": self.fingerprint,
            "settings": _resumable_settings(self.cfg),
            "peak_memory_mb": self.peak_memory_mb(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "filter": self.grad_filter.state_dict(),
            "batches": self.task.batches.state_dict(), "rng": checkpoint.rng_states(),
        })

    def peak_memory_mb(self) -> float:
        return max(self.peak_before, peak_memory_mb(self.device))

    def finish(self, status: str, step: int, diverged_at: int | None) -> dict[str, Any]:
        """Write summary.json, last: what the run found, how fast, and how to name it in titles."""
        cfg, rows = self.cfg, self.writer.rows
        config = to_dict(cfg)
        summary = {
            "status": status, "task": cfg.task, "filter": cfg.filter.name, "seed": cfg.seed,
            "steps": step, "max_steps": cfg.train.max_steps, "diverged_at": diverged_at,
            **metric_summary(rows),
            "wall_s": self.wall, "ms_per_step": self.timer.median_ms(), "peak_memory_mb": self.peak_memory_mb(),
            "final": {k: rows[-1].get(k) for k in ("step", "train_loss", "train_acc", "val_loss", "val_acc")},
            "title": {"task": task(cfg.task).describe(getattr(cfg, cfg.task)), "variant": describe_variant(config)},
            "device": _device_name(self.device), "dtype": cfg.dtype,
            "versions": {"grokrun": grokrun.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
        }
        self.writer.finish(summary)
        return summary


def _resumable_settings(cfg) -> dict[str, Any]:
    """What a checkpoint must agree with to resume: every setting but where the run directory lies."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("out", "name")}


def _to(state: Any, device: torch.device) -> Any:
    """A checkpoint's filter state (loaded on the CPU) on the run's device."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to(v, device) for k, v in state.items()}
    return state


class ProgressReport:
    """A run's progress: a bar on a terminal; where the output goes to a file or a pipe (a cluster job, nohup,
    a notebook), a plain line at an evaluation, at most one every ``PLAIN_EVERY_S`` seconds."""

    PLAIN_EVERY_S = 10.0

    def __init__(self, name: str, total: int, start: int, quiet: bool, console: Console | None):
        self.name, self.total = name, total
        self.console = console or Console(highlight=False)
        self.plain = not quiet and not self.console.is_terminal
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[stats]}"),
                            TimeElapsedColumn(), console=self.console, disable=quiet or self.plain, transient=False)
        self.task = self.bar.add_task(escape(name), total=total, completed=start, rate="", stats="")
        self.printed = time.perf_counter()

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, step: int, wall: float, row: dict[str, Any]) -> None:
        rate = f"{step / max(wall, 1e-9):.1f} it/s"
        self.bar.update(self.task, completed=step, rate=rate, stats=_stats(row))
        if self.plain and time.perf_counter() - self.printed >= self.PLAIN_EVERY_S:
            self.console.print(escape(f"{self.name}: step {step:,}/{self.total:,} · {rate} · {_stats(row)}"))
            self.printed = time.perf_counter()


def _stats(row: dict[str, Any]) -> str:
    """"acc train 1.000 val 0.981 · loss train 0.0123 val 0.0871"; a row without the training set scored
    (see Run.evaluate) shows validation alone."""
    parts = []
    for metric, spec in (("acc", ".3f"), ("loss", ".3g")):
        values = [f"{split} {row[f'{split}_{metric}']:{spec}}" for split in ("train", "val")
                  if row.get(f"{split}_{metric}") is not None]
        if values:
            parts.append(f"{metric} " + " ".join(values))
    return " · ".join(parts)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

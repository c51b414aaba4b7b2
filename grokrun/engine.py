"""THE training loop, shared by every task: forward, backward, gradient filter, optimizer step.

    run_dir, summary = train(resolve(None, {"task": "modular", "filter.name": "ema"}))
    results = train_seeds([cfg_seed0, cfg_seed1, ...])   # seeds together, one stacked model

A task supplies the model, its data on the device, a loss and an evaluation (grokrun.tasks.base.Task);
everything else lives here, once, in the order a run goes: set-up, restore (when resuming), the loop,
evaluation, checkpoint and summary. The loop trains N seeds of one config at once (grokrun.stacking: the
task's own module for one seed, a stacked model for several), each with its own run directory, status and
end. Between evaluations the loop never waits for the device: losses stay tensors, divergence is a flag per
seed on the device, and step times are CUDA events read at the next evaluation, where one transfer brings
every seed's metrics.
"""

from __future__ import annotations

import platform
import statistics
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import grokrun
from grokrun import checkpoint, graphs, snapshots
from grokrun.config import TrainConfig, resolve, to_dict
from grokrun.errors import UserError
from grokrun.filters import describe_variant
from grokrun.filters import make as make_filter
from grokrun.models import add_lora, parameter_counts
from grokrun.measure import StepTimer, peak_memory_mb, reset_peak_memory, synchronize
from grokrun.optim import make_optimizer, warmup_factor
from grokrun.stacking import Single, Stacked, split_filter, split_optimizer, stack_filter, stack_optimizer
from grokrun.results import (CHECKPOINT, CONFIG, METRICS, OUTPUT_SETTINGS, SUMMARY, RunWriter, differences,
                             first_difference, metric_summary, new_run_dir, without)
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
    """A second interrupt: the run(s) stopped where they were, without a summary. ``resume`` is what
    ``grokrun train --resume`` takes to continue them: the run directory, or the folder of seeds' ones."""

    def __init__(self, resume: Path):
        super().__init__(str(resume))
        self.resume = resume


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
    return train_seeds([cfg], quiet, console, None if resume is None else [resume])[0]


def train_seeds(cfgs: list, quiet: bool = False, console: Console | None = None,
                resume: list[Path] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Train runs that differ only in their seed together, as one stacked model (a single config: the task's
    own module). Each writes its own run directory (the config's out/name), exactly as if trained alone.
    Returns (run dir, summary) per config, in order.

    With ``resume`` (a run directory per config), continue them from their checkpoints, which must all be at
    the same step (as a batched run leaves them when interrupted).
    """
    saved = None if resume is None else [checkpoint.load(d) for d in resume]  # may raise UserError: no writes yet
    run = Run(cfgs)  # may raise UserError (no data, no device): still nothing written
    if saved is None:
        run.start()
    else:
        run.restore(saved, [Path(d) for d in resume])
    run.loop(quiet, console)
    return [(run.run_dirs[i], run.summaries[i]) for i in range(len(cfgs))]


def group_runs(runs: list[tuple[Any, Path | None]], batch: bool = True,
               note: Callable[[str], None] | None = None) -> list[list[tuple[Any, Path | None]]]:
    """(config, run directory to resume or None) pairs, grouped into what ``train_seeds`` trains at once: runs
    that differ only in their seed (and, when resumed, whose checkpoints are at the same step), where the task
    can stack its seeds; every other run alone. ``note`` hears why seeds asked to go together cannot."""
    import json

    groups: dict[tuple, list] = {}
    for cfg, resume in runs:
        key = (json.dumps(_resumable_settings(cfg, seed=False), sort_keys=True, default=str),
               None if resume is None else checkpoint.step_of(resume))
        groups.setdefault(key, []).append((cfg, resume))
    units = []
    for members in groups.values():
        name = members[0][0].task
        if batch and len(members) > 1 and not batchable(name):
            if note:
                note(f"the {name} task cannot train seeds together (its model cannot be stacked); "
                     f"its {len(members)} seeds run one after another")
        if batch and batchable(name):
            while members:  # a seed twice (two runs of it in one folder) goes in another group
                unit, rest, seen = [], [], set()
                for m in members:
                    (rest if m[0].seed in seen else unit).append(m)
                    seen.add(m[0].seed)
                units.append(unit)
                members = rest
        else:
            units.extend([m] for m in members)
    return units


def train_runs(runs: list[tuple[Any, Path | None]], batch: bool = True, quiet: bool = False,
               console: Console | None = None, report: Callable[[Path, dict], None] | None = None) -> bool:
    """Train (or resume) runs, seeds together where they can be (``group_runs``), calling ``report`` for each
    as its group ends. Returns False if the user interrupted (the groups after it are left untrained)."""
    console = console or Console(highlight=False)
    for unit in group_runs(runs, batch, note=lambda text: console.print(escape(text))):
        resumes = [r for _, r in unit]
        results = train_seeds([c for c, _ in unit], quiet, console, None if resumes[0] is None else resumes)
        for run_dir, summary in results:
            if report:
                report(run_dir, summary)
        if any(summary["status"] == "interrupted" for _, summary in results):
            return False
    return True


def batchable(task_name: str) -> bool:
    """Whether the task's seeds can be trained together (Task.batchable), without building it."""
    import importlib

    from grokrun.tasks import TASKS

    module = importlib.import_module(TASKS[task_name])
    return any(getattr(v, "batchable", False) for v in vars(module).values()
               if isinstance(v, type) and v.__module__ == module.__name__)


class Run:
    """Training runs of one config that differ only in their seed: their models (one module, or the seeds
    stacked into one: grokrun.stacking), data, optimizer, filter and run directories, and the loop over them.

    Each seed ends on its own: one that reaches the target or diverges is finished (run directory complete)
    and dropped from the stack, and the others go on, each exactly as it would alone.
    """

    # --- set-up -----------------------------------------------------------------------------------------

    def __init__(self, cfgs: list):
        self.cfgs, cfg = cfgs, cfgs[0]
        self.cfg = cfg
        settings = [_resumable_settings(c, seed=False) for c in cfgs]
        if any(s != settings[0] for s in settings) or len({c.seed for c in cfgs}) < len(cfgs):
            raise ValueError("runs trained together must differ in their seed only")
        self.device = pick_device(cfg.device)
        if cfg.tensorboard:
            _board_available()
        param_dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                         else nullcontext())
        tasks = []
        start = _final_weights(cfg.model.init_from) if cfg.model.init_from else None
        for c in cfgs:
            torch.manual_seed(c.seed)
            tasks.append(task(c.task).build(c, self.device, param_dtype))
            if start is not None:
                _load_weights(tasks[-1].model, start, cfg.model.init_from)
            if cfg.model.lora_rank:  # (its A matrices drawn after the task's draws: the base weights are the seed's)
                add_lora(tasks[-1].model, cfg.model.lora_rank, cfg.model.lora_alpha)
        self.parameters = parameter_counts(tasks[0].model)
        if len(tasks) > 1 and not tasks[0].batchable:
            raise UserError(f"the {cfg.task} task cannot train seeds together; give one --seed at a time")
        self.fingerprints = [t.fingerprint() for t in tasks]
        self.batches = [t.batches for t in tasks]
        self.models = Single(tasks[0]) if len(tasks) == 1 else Stacked(tasks, len(set(self.fingerprints)) == 1)
        self.graphs = None
        self._build_optimizer()
        if graphs.wanted(cfg.cuda_graph, self.device, self.grad_filter, tasks[0]):
            graphs.make_capturable(self.optimizer)
            self.graphs = graphs.StepGraphs(self)
        self.active = list(range(len(cfgs)))  # the seeds still training, in the order of the stack
        self.evals = eval_steps(cfg.train, self.batches[0].steps_per_epoch)
        self.save_every = cfg.train.checkpoint_every or max(1, cfg.train.max_steps // 10)
        self.snapshot_steps = snapshots.steps(cfg.train.snapshots, cfg.train.max_steps)
        if cfg.train.snapshots == "log":
            self.snapshot_steps = snapshots.on_evaluations(self.snapshot_steps, self.evals)
        self.timer = StepTimer(self.device)
        self.stop = StopSignals()  # replaced by the live one while the loop runs
        self.wall, self.start_step, self.peak_before = 0.0, 0, 0.0  # wall: training time, evaluation excluded
        self.run_dirs: list[Path] = []
        self.writers: list[RunWriter] = []
        self.summaries: list[dict[str, Any] | None] = [None] * len(cfgs)

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        self.optimizer = make_optimizer(cfg.optim, self.models.params)
        if self.graphs is not None:
            graphs.make_capturable(self.optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_factor(cfg.optim.warmup_steps))
        self.grad_filter = make_filter(cfg.filter)
        self.grad_filter.set_stacked_seeds(self.models.stacked)

    def start(self) -> None:
        """A new run directory per seed, with its config in it."""
        for cfg in self.cfgs:
            run_dir = new_run_dir(Path(cfg.out), cfg.name or f"{cfg.task}-{cfg.filter.name}-seed{cfg.seed}")
            self.run_dirs.append(run_dir)
            self.writers.append(RunWriter(run_dir, to_dict(cfg)))

    def restore(self, saved: list[dict[str, Any]], run_dirs: list[Path]) -> None:
        """Continue ``run_dirs`` from their checkpoints: every state as it was at the checkpoint's step.

        Each checkpoint must belong to its run: written with the settings its config.json holds (a
        checkpoint from another run, or a config edited since, is refused) and on the same data.
        Nothing in the run directories changes until all of them have been read back.
        """
        for s, cfg, fingerprint, run_dir in zip(saved, self.cfgs, self.fingerprints, run_dirs):
            _check_checkpoint(s, cfg, fingerprint, run_dir)
        steps = {s["step"] for s in saved}
        if len(steps) > 1:
            raise UserError(f"the checkpoints of {', '.join(map(str, run_dirs))} are at different steps "
                            f"({', '.join(f'{x:,}' for x in sorted(steps))}); resume them one at a time")
        try:
            self.models.load([s["model"] for s in saved])
            if self.models.stacked:
                params = self.models.params
                self.optimizer.load_state_dict(stack_optimizer([s["optimizer"] for s in saved], params))
                self.grad_filter.load_state_dict(_to(stack_filter([s["filter"] for s in saved],
                                                                  self.grad_filter.seed_axes), self.device))
            else:
                self.optimizer.load_state_dict(saved[0]["optimizer"])
                self.grad_filter.load_state_dict(_to(saved[0]["filter"], self.device))
            self.scheduler.load_state_dict(saved[0]["scheduler"])
            for batches, s in zip(self.batches, saved):
                batches.load_state_dict(s["batches"])
            checkpoint.set_rng_states(saved[0]["rng"])
            self.start_step, self.wall, self.timer.ms = saved[0]["step"], saved[0]["wall_s"], saved[0]["ms"]
            self.peak_before = max(s["peak_memory_mb"] for s in saved)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
            why = " ".join(str(e).split())[:120]
            where = run_dirs[0] / CHECKPOINT if len(run_dirs) == 1 else f"the {CHECKPOINT} files of {run_dirs[0].parent}"
            raise UserError(f"{where} does not fit this run ({type(e).__name__}: {why}); "
                            "it cannot be resumed") from None
        for run_dir in run_dirs:
            try:
                self.writers.append(RunWriter.resume(run_dir, upto=self.start_step))
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {run_dir / METRICS} ({e}); the run cannot be resumed") from None
        self.run_dirs = list(run_dirs)
        for run_dir in run_dirs:
            (run_dir / SUMMARY).unlink(missing_ok=True)  # running again: no stale status
            snapshots.discard_after(run_dir, self.start_step)

    # --- the loop ---------------------------------------------------------------------------------------

    def loop(self, quiet: bool, console: Console | None) -> None:
        """Train from the start step until every seed has reached the budget or the target, diverged, or been
        stopped; each seed's summary is written as it ends."""
        cfg = self.cfg
        max_steps, target = cfg.train.max_steps, cfg.train.stop_at_acc
        reset_peak_memory(self.device)
        first_bad = torch.full((self.models.n,), -1, dtype=torch.long, device=self.device)  # first non-finite step
        progress = ProgressReport(self._name(), max_steps, self.start_step, quiet, console)
        step = self.start_step
        try:
            with progress, stop_signals() as stop:
                self.stop = stop
                rows = self.evaluate(0) if self.start_step == 0 else [w.rows[-1] for w in self.writers]
                if self.start_step == 0:
                    self.save_snapshots(0)
                t0 = time.perf_counter()
                for step in range(self.start_step + 1, max_steps + 1):
                    self.timer.start()
                    bad = self.step(step)
                    first_bad = torch.where(bad & (first_bad < 0), step, first_bad)  # on the device: no wait
                    self.timer.stop()
                    is_eval, is_save = step in self.evals, step % self.save_every == 0 or step == max_steps
                    is_snapshot = step in self.snapshot_steps
                    if not (is_eval or is_save or is_snapshot or stop.requested):
                        continue
                    # The only places the loop waits for the device: evaluations, checkpoints, a stop request
                    # (and --snapshots N steps; log snapshots fall on evaluations).
                    synchronize(self.device)
                    self.wall += time.perf_counter() - t0
                    self.timer.flush()
                    if is_eval:
                        rows = self.evaluate(step)
                        progress.update(step, self.wall, rows, len(self.cfgs))
                    bad_steps = first_bad.tolist()
                    if is_snapshot:  # (not of a seed that has diverged: its weights are no longer a model's)
                        self.save_snapshots(step, skip={j for j, b in enumerate(bad_steps) if b >= 0})
                    ended: dict[int, tuple[str, int | None]] = {}  # position in the stack -> (status, diverged at)
                    for j, bad_step in enumerate(bad_steps):
                        if bad_step >= 0:
                            ended[j] = ("diverged", bad_step)
                        elif is_eval and target is not None and rows[j]["val_acc"] is not None \
                                and rows[j]["val_acc"] >= target:
                            ended[j] = ("stopped_at_target", None)
                        elif stop.requested:
                            ended[j] = ("interrupted", None)
                        elif step == max_steps:
                            ended[j] = ("completed", None)
                    # A checkpoint at every save step for each seed, and for a seed that ends in a state worth
                    # continuing from (a diverged one keeps its last good checkpoint).
                    self.save_checkpoints(step, [j for j in range(len(self.active))
                                                 if (is_save or j in ended) and ended.get(j, ("",))[0] != "diverged"])
                    for j, (status, diverged_at) in ended.items():
                        self.finish(self.active[j], status, step, diverged_at)
                    if len(ended) == len(self.active):
                        break
                    if ended:  # the others go on, as one stack of the remaining seeds
                        keep = [j for j in range(len(self.active)) if j not in ended]
                        self._keep(keep)
                        first_bad = first_bad[keep]
                        rows = [rows[j] for j in keep]
                    t0 = time.perf_counter()
                for i in self.active:  # resumed at the budget's end (its checkpoint is the last step's)
                    if self.summaries[i] is None:
                        self.finish(i, "completed", step, None)
        except KeyboardInterrupt:  # a second interrupt: stop at once, leaving no summary
            for i in self.active:
                self.writers[i].close()
            raise StoppedAtOnce(self.run_dirs[0] if len(self.cfgs) == 1 else _common_parent(self.run_dirs)) from None

    def step(self, step: int) -> torch.Tensor:
        """One training step of every seed still training: a batch each, forward, backward, clipping, filter,
        optimizer and learning-rate schedule (replayed from a CUDA graph with --cuda-graph on: grokrun.graphs).
        Returns, on the device, whether each seed's loss or gradient norm is non-finite; nothing here waits for
        the device."""
        if self.graphs is not None:
            return self.graphs.step(step)
        bad = self.compute(self.next_batch(), amplify=step > self.cfg.filter.start)
        self.scheduler.step()
        return bad

    def next_batch(self) -> torch.Tensor:
        """Each training seed's next batch of example indices, on the device (one row per seed when stacked)."""
        return self.models.batch([self.batches[i].next() for i in self.active])

    def compute(self, idx: torch.Tensor, amplify: bool) -> torch.Tensor:
        """The device work of a step on the batch ``idx``: what a CUDA graph captures."""
        models = self.models
        with self.autocast:
            losses = models.losses(idx)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the seeds' losses are independent: each gets its own gradient
        # Clipping (per seed) comes before the filter, as in the Grokfast IMDb script.
        norms = models.grad_norms(self.cfg.optim.clip_grad)
        self.grad_filter.apply(models.params, amplify=amplify)
        self.optimizer.step()
        return ~torch.isfinite(losses.detach() + norms)

    def _keep(self, keep: list[int]) -> None:
        """Go on with the seeds at stack positions ``keep`` only: new parameters, optimizer and filter state
        cut from the old ones, so the finished seeds stop costing anything."""
        models = self.models
        if not models.stacked:
            return
        per_seed, scheduler = self._seed_states(), self.scheduler.state_dict()
        self.models = models.select(keep)
        self._build_optimizer()
        params, axes = self.models.params, self.grad_filter.seed_axes
        self.optimizer.load_state_dict(stack_optimizer([per_seed[j][0] for j in keep], params))
        self.grad_filter.load_state_dict(stack_filter([per_seed[j][1] for j in keep], axes))
        self.scheduler.load_state_dict(scheduler)
        self.active = [self.active[j] for j in keep]
        if self.graphs is not None:
            self.graphs.reset()

    def _name(self) -> str:
        cfg = self.cfg
        if len(self.cfgs) == 1:
            return f"{cfg.task} {cfg.filter.name} seed {cfg.seed}"
        return f"{cfg.task} {cfg.filter.name} seeds {format_seeds([c.seed for c in self.cfgs])}"

    # --- evaluation, checkpoint, summary ------------------------------------------------------------------

    def evaluate(self, step: int) -> list[dict[str, Any]]:
        """One metrics row per seed still training: loss and accuracy on the full validation set, the weight
        norm, and at every ``train_eval_every``-th evaluation (counting step 0's) and the budget's last step,
        on the full training set too; its cells are empty in the other rows. Thresholds are on validation
        accuracy, so they keep every evaluation; the training set, as large, is the other half of an
        evaluation's cost. One wait for the device, whatever the number of seeds."""
        first = self.writers[self.active[0]]
        scored = len(first.rows) % self.cfg.train.train_eval_every == 0 or step == self.cfg.train.max_steps
        self.models.train(False)
        with torch.no_grad():
            with self.autocast:
                train_loss, train_acc, collapse = self.models.evaluate("train") if scored else (None, None, None)
                val_loss, val_acc, _ = self.models.evaluate("val")
            weight_norm = self.models.weight_norms()  # L2 norm of all parameters together
        self.models.train(True)
        metrics = [train_loss, train_acc, val_loss, val_acc, weight_norm, collapse]
        known = [m for m in metrics if m is not None]
        values = iter(torch.stack([m.double() for m in known]).tolist())  # the one wait, all seeds at once
        columns = [None if m is None else next(values) for m in metrics]
        rows = []
        for j, i in enumerate(self.active):
            row = dict(zip(("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm", "softmax_collapse"),
                           (None if c is None else c[j] for c in columns)), step=step, wall_s=self.wall)
            self.writers[i].log(row)
            rows.append(row)
        return rows

    def _seed_states(self) -> list[tuple[dict, dict]]:
        """(optimizer state, filter state) per seed in the stack, each as a single run's."""
        if not self.models.stacked:
            return [(self.optimizer.state_dict(), self.grad_filter.state_dict())]
        n = self.models.n
        return list(zip(split_optimizer(self.optimizer.state_dict(), self.models.params),
                        split_filter(self.grad_filter.state_dict(), self.grad_filter.seed_axes, n)))

    def save_checkpoints(self, step: int, positions: list[int]) -> None:
        """Write checkpoint.pt of the seeds at these stack positions, each in a single run's format (so any of
        them can also be resumed alone); a second Ctrl-C meanwhile waits until they are whole."""
        if not positions:
            return
        with self.stop.shielded():
            per_seed = self._seed_states()
            common = {"step": step, "wall_s": self.wall, "ms": self.timer.ms, "peak_memory_mb": self.peak_memory_mb(),
                      "scheduler": self.scheduler.state_dict(), "rng": checkpoint.rng_states()}
            for j in positions:
                i = self.active[j]
                optimizer, filter_state = per_seed[j]
                checkpoint.save(self.run_dirs[i], {
                    **common, "fingerprint": self.fingerprints[i], "settings": _resumable_settings(self.cfgs[i]),
                    "model": self.models.state(j), "optimizer": optimizer, "filter": filter_state,
                    "batches": self.batches[i].state_dict(),
                })

    def save_snapshots(self, step: int, skip: set[int] = frozenset()) -> None:
        """The weights of every seed still training (but those at stack positions ``skip``), into its run
        directory's snapshots/ (grokrun.snapshots)."""
        if step not in self.snapshot_steps:
            return
        for j, i in enumerate(self.active):
            if j not in skip:
                snapshots.save(self.run_dirs[i], step, self.models.state(j))

    def peak_memory_mb(self) -> float:
        return max(self.peak_before, peak_memory_mb(self.device))

    def finish(self, i: int, status: str, step: int, diverged_at: int | None) -> dict[str, Any]:
        """Write seed ``i``'s summary.json, last: what the run found, how fast, and how to name it in titles."""
        cfg, rows = self.cfgs[i], self.writers[i].rows
        config = to_dict(cfg)
        summary = {
            "status": status, "task": cfg.task, "filter": cfg.filter.name, "seed": cfg.seed,
            "steps": step, "max_steps": cfg.train.max_steps, "diverged_at": diverged_at,
            **metric_summary(rows),
            "wall_s": self.wall, "ms_per_step": self.timer.median_ms(), "peak_memory_mb": self.peak_memory_mb(),
            "parameters": self.parameters,
            "final": {k: rows[-1].get(k) for k in ("step", "train_loss", "train_acc", "val_loss", "val_acc")},
            "title": {"task": task(cfg.task).describe(getattr(cfg, cfg.task)), "variant": describe_variant(config)},
            "device": _device_name(self.device), "dtype": cfg.dtype,
            "versions": {"grokrun": grokrun.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
        }
        if len(self.cfgs) > 1:  # time and memory were the stack's, shared by these seeds
            summary["trained_with"] = len(self.cfgs)
        self.writers[i].finish(summary)
        self.summaries[i] = summary
        return summary


def _final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    """--init-from: the weights in a run directory's checkpoint (its last, for a run that ended)."""
    return checkpoint.load(Path(run_dir))["model"]


def _load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Start ``model`` from ``weights``; UserError naming the first tensor that does not fit."""
    own = model.state_dict()
    for key in sorted(own.keys() | weights.keys()):
        here, there = own.get(key), weights.get(key)
        if here is None or there is None or here.shape != there.shape:
            def shape(t):
                return "absent" if t is None else tuple(t.shape)
            raise UserError(f"--init-from {source}: its weights do not fit this model ({key} is {shape(there)} there "
                            f"and {shape(here)} here); start from a run of the same task and size")
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(weights[key])


def _board_available() -> None:
    """--tensorboard needs the tensorboard package: say so before anything is written."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs TensorBoard: pip install 'grokrun[tensorboard]'")


def _check_checkpoint(saved: dict[str, Any], cfg, fingerprint: str, run_dir: Path) -> None:
    if "settings" in saved:  # (checkpoints written before settings were stored have only the data's)
        diff = differences(_completed(saved["settings"]), _resumable_settings(cfg))
        if diff:  # name the most telling difference: the task or the filter before their settings
            key, was, now, more = first_difference(diff, prefer=("task", "filter.name", "optim.name"))
            raise UserError(f"{run_dir / CHECKPOINT} was written by a run with {key} = {was!r}, but {CONFIG} "
                            f"there says {now!r}{more}; a checkpoint resumes only the run that wrote it "
                            f"(restore {CONFIG}, or start a new run with --config)")
    if saved.get("fingerprint") != fingerprint:
        raise UserError(f"the data of {run_dir} differ from its checkpoint's (the dataset files changed?); "
                        "it cannot be resumed")


def _completed(settings: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's settings with those added to grokrun since it was written at their defaults, as its
    config.json is read (resolve completes a saved config), so that an older checkpoint still resumes."""
    try:
        return _resumable_settings(resolve(settings, {}))
    except UserError:  # settings today's checks refuse: compare them as they are, and name the difference
        return settings


def format_seeds(seeds: list[int]) -> str:
    """[0, 1, 2, 3, 7] -> "0-3,7"."""
    parts, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def _common_parent(paths: list[Path]) -> Path:
    parents = {p.parent for p in paths}
    return parents.pop() if len(parents) == 1 else paths[0].parent


def _resumable_settings(cfg, seed: bool = True) -> dict[str, Any]:
    """What a checkpoint must agree with to resume: every setting but where the run directory lies (and,
    for runs trained together, but the seed)."""
    return without(to_dict(cfg), OUTPUT_SETTINGS + (() if seed else ("seed",)))


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

    def update(self, step: int, wall: float, rows: list[dict[str, Any]], seeds: int = 1) -> None:
        """After an evaluation: ``rows`` of the seeds still training, of ``seeds`` started together."""
        rate = f"{step / max(wall, 1e-9):.1f} it/s"
        stats = _stats(rows[0]) if seeds == 1 else _stats_of_seeds(rows, seeds)
        self.bar.update(self.task, completed=step, rate=rate, stats=stats)
        if self.plain and time.perf_counter() - self.printed >= self.PLAIN_EVERY_S:
            self.console.print(escape(f"{self.name}: step {step:,}/{self.total:,} · {rate} · {stats}"))
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


def _stats_of_seeds(rows: list[dict[str, Any]], seeds: int) -> str:
    """"16/16 seeds training · val acc median 0.981 (0.702-0.995)"; loss where the task has no accuracy."""
    metric, spec = ("val_acc", ".3f") if rows[0].get("val_acc") is not None else ("val_loss", ".3g")
    values = sorted(r[metric] for r in rows if r.get(metric) is not None)
    text = f"{len(rows)}/{seeds} seeds training"
    if values:
        text += (f" · {metric.replace('_', ' ')} median {statistics.median(values):{spec}} "
                 f"({values[0]:{spec}}-{values[-1]:{spec}})")
    return text


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

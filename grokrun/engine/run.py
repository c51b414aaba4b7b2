"""A Run: training runs of one config that differ only in their seed, from set-up to the last summary.

    run = Run(cfgs); run.start(); run.loop(quiet=False, console=None)  # or run.restore(saved, run_dirs), not start

Read top to bottom: set-up (models, data, optimizer, filter, schedules), restore (when resuming), the loop,
the step. A task supplies the model, its data on the device, a loss and an evaluation (grokrun.tasks.base.Task);
what the run writes is grokrun.engine.records. The loop trains N seeds of one config at once
(grokrun.stacking: the task's own module for one seed, a stacked model for several), each with its own run
directory, status and end. Between evaluations the loop never waits for the device: losses stay tensors,
divergence is a flag per seed on the device, and step times are CUDA events read at the next evaluation,
where one transfer brings every seed's metrics.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from grokrun import checkpoint, graphs, resume, snapshots
from grokrun.config import to_dict
from grokrun.dropout import add_dropout
from grokrun.engine import records
from grokrun.engine.progress import ProgressReport, run_name
from grokrun.engine.schedules import checkpoint_steps, eval_steps, run_snapshot_steps
from grokrun.engine.signals import StoppedAtOnce, StopSignals, stop_signals
from grokrun.errors import UserError
from grokrun.filters import make as make_filter
from grokrun.filters import normalized_rate
from grokrun.filters.base import state_to
from grokrun.measure import StepTimer, pick_device, reset_peak_memory, synchronize
from grokrun.models import add_lora, load_weights, parameter_counts
from grokrun.noise import add_update_noise, draws
from grokrun.optim import lr_factor, make_optimizer
from grokrun.regularizers import make as make_regularizer
from grokrun.results import CHECKPOINT, METRICS, SUMMARY, RunWriter, new_run_dir
from grokrun.sinks import open_sinks
from grokrun.stacking import Single, Stacked, stack_filter, stack_optimizer
from grokrun.tasks import task
from grokrun.tasks.base import Task


class Run:
    """Training runs of one config that differ only in their seed: their models (one module, or the seeds
    stacked into one: grokrun.stacking), data, optimizer, filter and run directories, and the loop over them.

    Each seed ends on its own: one that reaches the target or diverges is finished (run directory complete)
    and dropped from the stack, and the others go on, each exactly as it would alone.
    """

    # --- set-up -----------------------------------------------------------------------------------------

    def __init__(self, cfgs: list, node: str = "local"):
        self.cfgs, self.cfg, self.node = cfgs, cfgs[0], node  # node: the Ray node id running it, or "local"
        cfg = self.cfg
        settings = [resume.resumable_settings(c, seed=False) for c in cfgs]
        if any(s != settings[0] for s in settings) or len({c.seed for c in cfgs}) < len(cfgs):
            raise ValueError("runs trained together must differ in their seed only")
        self.device = pick_device(cfg.device)
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                         else nullcontext())
        tasks = self._build_tasks()
        self.parameters = parameter_counts(tasks[0].model)
        self.fingerprints = [t.fingerprint() for t in tasks]
        self.batches = [t.batches for t in tasks]
        self.models = Single(tasks[0], cfg.model.weight_noise) if len(tasks) == 1 else Stacked(
            tasks, len(set(self.fingerprints)) == 1)
        self.regularizer = make_regularizer(cfg.train.reg)
        self.graphs = None
        self._build_optimizer()
        if graphs.wanted(cfg.cuda_graph, self.device, self.grad_filter, tasks[0]):
            graphs.make_capturable(self.optimizer)
            # (captured once the rate is constant: after the warmup and the annealing, and --normalize-lr's change)
            constant_after = max(cfg.optim.warmup_steps + cfg.optim.anneal_steps,
                                 cfg.filter.start if self.normalized != 1.0 else 0)
            self.graphs = graphs.StepGraphs(self.compute, self.grad_filter, constant_after)
        self.active = list(range(len(cfgs)))  # the seeds still training, in the order of the stack
        self.evals = eval_steps(cfg.train, self.batches[0].steps_per_epoch)
        self.saves = checkpoint_steps(cfg.train)
        self.snapshot_steps = run_snapshot_steps(cfg.train, self.evals)
        self.timer = StepTimer(self.device)
        self.stop = StopSignals()  # replaced by the live one while the loop runs
        self.wall, self.start_step, self.peak_before = 0.0, 0, 0.0  # wall: training time, evaluation excluded
        self.run_dirs: list[Path] = []
        self.writers: list[RunWriter] = []
        self.summaries: list[dict[str, Any] | None] = [None] * len(cfgs)
        self.ran_on = [[records.place(node, 0)] for _ in cfgs]  # where each seed trained, from which step

    def _build_tasks(self) -> list:
        """Each seed's task (data and model), drawn from its seed; --init-from and --lora-rank applied."""
        cfg = self.cfg
        param_dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        tasks = []
        for c in self.cfgs:
            torch.manual_seed(c.seed)
            tasks.append(task(c.task).build(c, self.device, param_dtype))
            if cfg.model.init_from:
                load_weights(tasks[-1].model, cfg.model.init_from)
            if cfg.model.lora_rank:  # (its A matrices drawn after the task's draws: the base weights are the seed's)
                add_lora(tasks[-1].model, cfg.model.lora_rank, cfg.model.lora_alpha)
            if cfg.model.dropout:
                add_dropout(tasks[-1].model, cfg.model.dropout, cfg.task)
        if len(tasks) > 1 and not tasks[0].batchable:
            raise UserError(f"the {cfg.task} task cannot train seeds together; give one --seed at a time")
        if cfg.model.weight_noise and type(tasks[0]).objective is Task.objective:
            raise UserError(f"--weight-noise: the {cfg.task} task computes its loss outside the model function that "
                            "the noisy weights go into; drop --weight-noise")
        drawn = draws(cfg)  # (with --cuda-graph on, refused when the config is checked: grokrun.noise.check)
        if drawn and len(tasks) > 1:
            raise UserError(f"{drawn} draws each run's random numbers alone: not for seeds stacked together "
                            "(give one --seed)")
        if cfg.compile:
            _compile(tasks, cfg)
        return tasks

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        self.optimizer = make_optimizer(cfg.optim, self.models.params, self.models.names,
                                        None if self.models.stacked else self.models.model)
        if self.graphs is not None:
            graphs.make_capturable(self.optimizer)
        self.normalized = normalized_rate(cfg.filter)
        factor = lr_factor(cfg.optim.warmup_steps, self.normalized, cfg.filter.start, cfg.optim.anneal_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.grad_filter = make_filter(cfg.filter)
        self.grad_filter.set_stacked_seeds(self.models.stacked)

    def start(self) -> None:
        """A new run directory per seed, with its config in it."""
        for cfg in self.cfgs:
            run_dir = new_run_dir(Path(cfg.out), cfg.name or f"{cfg.task}-{cfg.filter.name}-seed{cfg.seed}")
            self.run_dirs.append(run_dir)
            config = to_dict(cfg)
            sinks = open_sinks(run_dir, config)  # (first: a sink that cannot start leaves the directory empty)
            self.writers.append(RunWriter(run_dir, config, records.extra_columns(self), sinks))

    # --- restore ----------------------------------------------------------------------------------------

    def restore(self, saved: list[dict[str, Any]], run_dirs: list[Path]) -> None:
        """Continue ``run_dirs`` from their checkpoints: every state as it was at the checkpoint's step.

        Each checkpoint must belong to its run (resume.check_belongs). Nothing in the run directories
        changes until all of them have been read back.
        """
        for s, cfg, fingerprint, run_dir in zip(saved, self.cfgs, self.fingerprints, run_dirs):
            resume.check_belongs(s, cfg, fingerprint, run_dir)
        steps = {s["step"] for s in saved}
        if len(steps) > 1:
            raise UserError(f"the checkpoints of {', '.join(map(str, run_dirs))} are at different steps "
                            f"({', '.join(f'{x:,}' for x in sorted(steps))}); resume them one at a time")
        try:
            self._load_states(saved)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
            why = " ".join(str(e).split())[:120]
            where = run_dirs[0] / CHECKPOINT if len(run_dirs) == 1 else f"the {CHECKPOINT} files of {run_dirs[0].parent}"
            raise UserError(f"{where} does not fit this run ({type(e).__name__}: {why}); "
                            "it cannot be resumed") from None
        for run_dir, s in zip(run_dirs, saved):
            resume.check_rows(run_dir, s, self.start_step)
        for run_dir, cfg in zip(run_dirs, self.cfgs):
            try:
                writer = RunWriter.resume(run_dir, upto=self.start_step)
            except OSError as e:
                raise UserError(f"cannot rewrite {run_dir / METRICS} ({e.strerror or e}); the run cannot be "
                                "resumed") from None
            writer.sinks = open_sinks(run_dir, to_dict(cfg), resumed_at=self.start_step,
                                      logged_upto=writer.last_written)
            self.writers.append(writer)
        self.run_dirs = list(run_dirs)
        for run_dir in run_dirs:
            (run_dir / SUMMARY).unlink(missing_ok=True)  # running again: no stale status
            snapshots.discard_after(run_dir, self.start_step)

    def _load_states(self, saved: list[dict[str, Any]]) -> None:
        self.models.load([s["model"] for s in saved])
        if self.models.stacked:
            params, axes = self.models.params, self.grad_filter.seed_axes
            self.optimizer.load_state_dict(stack_optimizer([s["optimizer"] for s in saved], params))
            self.grad_filter.load_state_dict(state_to(stack_filter([s["filter"] for s in saved], axes),
                                                                  self.device))
        else:
            self.optimizer.load_state_dict(saved[0]["optimizer"])
            self.grad_filter.load_state_dict(state_to(saved[0]["filter"], self.device))
        self.scheduler.load_state_dict(saved[0]["scheduler"])
        for batches, s in zip(self.batches, saved):
            batches.load_state_dict(s["batches"])
        checkpoint.set_rng_states(saved[0]["rng"])
        self.start_step, self.wall, self.timer.ms = saved[0]["step"], saved[0]["wall_s"], saved[0]["ms"]
        self.peak_before = max(s["peak_memory_mb"] for s in saved)
        self.ran_on = [[*s.get("ran_on", []), records.place(self.node, s["step"])] for s in saved]

    # --- the loop ---------------------------------------------------------------------------------------

    def loop(self, quiet: bool, console: Console | None) -> None:
        """Train from the start step until every seed has reached the budget or the target, diverged, or been
        stopped; each seed's summary is written as it ends."""
        max_steps = self.cfg.train.max_steps
        reset_peak_memory(self.device)
        self.first_bad = torch.full((self.models.n,), -1, dtype=torch.long, device=self.device)  # first non-finite step
        progress = ProgressReport(run_name(self.cfgs), max_steps, self.start_step, quiet, console)
        step = self.start_step
        try:
            with progress, stop_signals() as stop:
                self.stop = stop
                if self.start_step == 0:
                    self.rows = records.evaluate(self, 0)
                    records.save_snapshots(self, 0)
                else:
                    self.rows = [w.rows[-1] for w in self.writers]
                t0 = time.perf_counter()
                for step in range(self.start_step + 1, max_steps + 1):
                    self.timer.start()
                    bad = self.step(step)
                    self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)  # no wait
                    self.timer.stop()
                    is_eval, is_save, is_snapshot = step in self.evals, step in self.saves, step in self.snapshot_steps
                    if not (is_eval or is_save or is_snapshot or stop.requested):
                        continue
                    # The only places the loop waits for the device: evaluations, checkpoints, a stop request
                    # (and --snapshots N steps; log snapshots fall on evaluations).
                    synchronize(self.device)
                    self.wall += time.perf_counter() - t0
                    self.timer.flush()
                    if not self._pause(step, is_eval, is_save, is_snapshot, progress):
                        break
                    t0 = time.perf_counter()
                for i in self.active:  # resumed at the budget's end (its checkpoint is the last step's)
                    if self.summaries[i] is None:
                        records.finish(self, i, "completed", step, None)
        except KeyboardInterrupt:  # a second interrupt: stop at once, leaving no summary
            for i in self.active:
                self.writers[i].close()
            raise StoppedAtOnce(self.run_dirs[0] if len(self.cfgs) == 1 else _common_parent(self.run_dirs)) from None

    def _pause(self, step: int, is_eval: bool, is_save: bool, is_snapshot: bool, progress: ProgressReport) -> bool:
        """At a point where the loop waits for the device: evaluate, snapshot, end the seeds that are done
        (checkpoint and summary), and go on with the others. Returns whether any seed trains on."""
        if is_eval:
            self.rows = records.evaluate(self, step)
            progress.update(step, self.wall, self.rows, len(self.cfgs))
        bad_steps = self.first_bad.tolist()
        if is_snapshot:  # (not of a seed that has diverged: its weights are no longer a model's)
            records.save_snapshots(self, step, skip={j for j, b in enumerate(bad_steps) if b >= 0})
        ended = self._ended(step, is_eval, bad_steps)
        # A checkpoint at every save step for each seed, and for a seed that ends in a state worth continuing
        # from (a diverged one keeps its last good checkpoint).
        records.save_checkpoints(self, step, [j for j in range(len(self.active))
                                              if (is_save or j in ended) and ended.get(j, ("",))[0] != "diverged"])
        for j, (status, diverged_at) in ended.items():
            records.finish(self, self.active[j], status, step, diverged_at)
        if len(ended) == len(self.active):
            return False
        if ended:  # the others go on, as one stack of the remaining seeds
            keep = [j for j in range(len(self.active)) if j not in ended]
            self._keep(keep)
            self.first_bad = self.first_bad[keep]
            self.rows = [self.rows[j] for j in keep]
        return True

    def _ended(self, step: int, is_eval: bool, bad_steps: list[int]) -> dict[int, tuple[str, int | None]]:
        """The seeds that end at this step: position in the stack -> (status, step it diverged at)."""
        ended: dict[int, tuple[str, int | None]] = {}
        for j, bad_step in enumerate(bad_steps):
            if bad_step >= 0:
                ended[j] = ("diverged", bad_step)
            elif is_eval and self._at_target(self.rows[j]):
                ended[j] = ("stopped_at_target", None)
            elif step == self.cfg.train.max_steps:  # (a stop asked for during the last step: it is done all the same)
                ended[j] = ("completed", None)
            elif self.stop.requested:
                ended[j] = ("interrupted", None)
        return ended

    def _at_target(self, row: dict) -> bool:
        """Whether an evaluation's row meets every target asked for (--stop-at-acc, --stop-at-loss); none: never."""
        acc, loss = self.cfg.train.stop_at_acc, self.cfg.train.stop_at_loss
        if acc is None and loss is None:
            return False
        met_acc = acc is None or (row.get("val_acc") is not None and row["val_acc"] >= acc)
        met_loss = loss is None or (row.get("val_loss") is not None and row["val_loss"] < loss)
        return met_acc and met_loss

    # --- the step ---------------------------------------------------------------------------------------

    def step(self, step: int) -> torch.Tensor:
        """One training step of every seed still training: a batch each, forward, backward, clipping, filter,
        optimizer and learning-rate schedule (replayed from a CUDA graph with --cuda-graph on: grokrun.graphs).
        Returns, on the device, whether each seed's loss or gradient norm is non-finite; nothing here waits for
        the device."""
        idx, amplify = self.next_batch(), step > self.cfg.filter.start
        bad = self.graphs.step(step, idx, amplify) if self.graphs is not None else self.compute(idx, amplify)
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
            objective = losses
            if self.regularizer is not None:  # (one run: such runs never stack)
                objective = losses + self.cfg.train.reg_weight * models.train_penalty(idx, self.regularizer)
        self.optimizer.zero_grad(set_to_none=True)
        objective.sum().backward()  # the seeds' losses are independent: each gets its own gradient
        # Clipping (per seed) comes before the filter, as in the Grokfast IMDb script.
        norms = models.grad_norms(self.cfg.optim.clip_grad)
        self.grad_filter.apply(models.params, amplify=amplify)
        self.optimizer.step()
        if self.cfg.optim.grad_noise:
            add_update_noise(self.optimizer, self.cfg.optim.grad_noise)
        return ~torch.isfinite(losses.detach() + norms)

    def _keep(self, keep: list[int]) -> None:
        """Go on with the seeds at stack positions ``keep`` only: new parameters, optimizer and filter state
        cut from the old ones, so the finished seeds stop costing anything."""
        if not self.models.stacked:
            return
        per_seed, scheduler = records.seed_states(self), self.scheduler.state_dict()
        self.models = self.models.select(keep)
        self._build_optimizer()
        params, axes = self.models.params, self.grad_filter.seed_axes
        self.optimizer.load_state_dict(stack_optimizer([per_seed[j][0] for j in keep], params))
        self.grad_filter.load_state_dict(stack_filter([per_seed[j][1] for j in keep], axes))
        self.scheduler.load_state_dict(scheduler)
        self.active = [self.active[j] for j in keep]
        if self.graphs is not None:
            self.graphs.reset(self.compute, self.grad_filter)


def _compile(tasks: list, cfg) -> None:
    """--compile: the model's forward (and so its backward) through torch.compile, in place, so its state_dict,
    checkpoints and snapshots keep their keys. One run's module only: a stack's vmapped step is another program."""
    if len(tasks) > 1:
        raise UserError("--compile compiles one run's model, not seeds stacked together; give one --seed")
    if cfg.cuda_graph == "on":
        raise UserError("--compile and --cuda-graph on are two ways to replay the step; choose one")
    tasks[0].model.compile()


def _common_parent(paths: list[Path]) -> Path:
    parents = {p.parent for p in paths}
    return parents.pop() if len(parents) == 1 else paths[0].parent

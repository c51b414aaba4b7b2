"""The shared sections of a run's settings, each field's type, default, help (the docstring under it, which
becomes the flag's --help) and check (the section's ``check``), stated once.

    TrainConfig().check()     # UserError naming the flag and the valid range

A task's section is its module's Options (grokrun.tasks); the filter section adds every filter's own Settings
to ``FilterBase`` (grokrun.config composes both). Importing this module does not import torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from grokrun.engine.schedules import snapshot_steps
from grokrun.errors import UserError, check_choice, check_range
from grokrun.filters import FILTERS
from grokrun.filters import check_name as check_filter
from grokrun import optimizer_library
from grokrun.optim import OPTIMIZERS
from grokrun.regularizers import CHOICES as REGULARIZERS
from grokrun.results import CHECKPOINT
from grokrun.sinks import check as check_sinks
from grokrun.tasks import TASKS

DEVICES = ("auto", "cpu", "cuda", "mps")
# Upper bounds, so a slip of the keyboard is an error and not a run that fills the memory or never ends.
MAX_STEPS = 10**9  # steps, and counts of steps (warmup, evaluation and checkpoint intervals, filter start)
MAX_SEED = 2**32 - 1
MAX_EVAL_POINTS = 10_000
DTYPES = ("float32", "float64", "bfloat16")
EVAL_SCHEDULES = ("linear", "log")


@dataclass
class FilterBase:
    name: str = "none"
    """Gradient filter (none: the baseline); several apply in order, comma-separated (orthograd,ema)."""
    start: int = 0
    """Withhold amplification for the first K steps; the filter state still updates."""
    normalize_lr: bool = False
    """Divide the learning rate by 1 + lamb while a filter that amplifies (ema, ma) does: the fair-step side that lucidrains/grokfast-pytorch's normalize_lr takes (--lr-matched in compare takes the other)."""

    def check(self) -> None:
        check_filter(self.name)
        check_range("filter-start", 0 <= self.start <= MAX_STEPS, f"in [0, {MAX_STEPS:,}]", self.start)
        for cls in FILTERS.values():  # each filter's Settings checks its own (a setting two share, by both)
            cls.Settings(**{g.name: getattr(self, g.name) for g in fields(cls.Settings)})


@dataclass
class OptimConfig:
    name: str = "adam"
    """Optimizer (adam: L2 decay, as Grokfast's modular script; adamw: decoupled), or pytorch_optimizer's by name."""
    lr: float = 1e-3
    """Peak learning rate."""
    beta1: float = 0.9
    """Adam beta1 (SGD momentum)."""
    beta2: float = 0.98
    """Adam beta2."""
    eps: float = 1e-8
    """Adam epsilon (Prieto et al. use 1e-25, so that a vanishing gradient still moves the weights)."""
    weight_decay: float = 0.0
    """Weight decay."""
    decay_to: str = "zero"
    """zero (the usual) | init: weight decay pulls toward the initial weights instead (openai/grok's weight_decay_form), in the optimizer's own form."""
    warmup_steps: int = 10
    """Linear learning-rate warmup over the first N updates, as published: update k runs at (k-1)/N of the rate."""
    clip_grad: float = 0.0
    """Clip the gradient's total L2 norm to this before the filter sees it (0 = no clipping)."""
    anneal_steps: int = 0
    """Cosine-anneal the rate from --lr to --lr / 10 over N updates after the warmup, then hold it there (openai/grok's anneal_lr; 0 = off)."""
    muon_lr: float = 0.02
    """--optimizer muon: the learning rate of Muon's matrices (--lr is AdamW's, for the rest)."""
    muon_momentum: float = 0.95
    """--optimizer muon: Muon's momentum (Nesterov)."""
    ns_steps: int = 5
    """--optimizer muon: Newton-Schulz iterations that orthogonalize each update."""
    grad_noise: float = 0.0
    """Gaussian noise of this standard deviation added to each update of Adam, AdamW or SGD before the step size scales it (openai/grok's noise_factor; 0 = none)."""
    optimizer_args: str = ""
    """An optimizer of pytorch_optimizer (any --optimizer not built in: pip install 'grokrun[optimizers]'): its arguments besides --lr and --weight-decay, as TOML: "betas = [0.95, 0.98], weight_decouple = false"."""

    def check(self) -> None:
        if self.name in OPTIMIZERS:
            if self.optimizer_args:
                raise UserError(f"--optimizer-args is for pytorch_optimizer's optimizers; {self.name}'s settings "
                                "have flags of their own")
        elif not isinstance(self.name, str):
            check_choice("optimizer", self.name, OPTIMIZERS)
        else:
            optimizer_library.check(self, list(OPTIMIZERS))
        check_range("lr", self.lr > 0, "> 0", self.lr)
        check_range("beta1", 0.0 <= self.beta1 < 1.0, "in [0, 1)", self.beta1)
        check_range("beta2", 0.0 <= self.beta2 < 1.0, "in [0, 1)", self.beta2)
        check_range("eps", 0.0 < self.eps < 1.0, "in (0, 1)", self.eps)
        check_range("weight-decay", self.weight_decay >= 0, ">= 0", self.weight_decay)
        check_range("warmup-steps", 0 <= self.warmup_steps <= MAX_STEPS, f"in [0, {MAX_STEPS:,}]", self.warmup_steps)
        check_range("clip-grad", self.clip_grad >= 0, ">= 0 (0 = no clipping)", self.clip_grad)
        check_range("anneal-steps", 0 <= self.anneal_steps <= MAX_STEPS, f"in [0, {MAX_STEPS:,}] (0 = off)",
                    self.anneal_steps)
        check_choice("decay target", self.decay_to, ("zero", "init"))
        check_range("muon-lr", self.muon_lr > 0, "> 0", self.muon_lr)
        check_range("muon-momentum", 0.0 <= self.muon_momentum < 1.0, "in [0, 1)", self.muon_momentum)
        check_range("ns-steps", 1 <= self.ns_steps <= 100, "in [1, 100]", self.ns_steps)
        check_range("grad-noise", 0.0 <= self.grad_noise <= 100.0, "in [0, 100] (0 = none)", self.grad_noise)


@dataclass
class TrainConfig:
    batch_size: int = 512
    """Training batch size."""
    max_steps: int = 10_000
    """Budget of optimization steps, at most 1e9."""
    eval_every: int = 0
    """Evaluate every N steps on the full validation set; 0 = once per epoch."""
    train_eval_every: int = 10
    """Also score the full training set at every Nth evaluation (and step 0 and the last step); 1 = at every one."""
    stop_at_acc: float | None = None
    """Stop once validation accuracy reaches this value (e.g. 0.95)."""
    stop_at_loss: float | None = None
    """Stop once validation loss falls below this value (e.g. 0.01); with --stop-at-acc, once both are met."""
    eval_schedule: str = "linear"
    """linear (every --eval-every steps) | log (every step below 30, every 10th below 150, then --eval-points log-spaced steps to the budget)."""
    eval_points: int = 150
    """Log schedule: how many log-spaced evaluations from step 150 to the budget (2 to 10,000)."""
    checkpoint_every: int = 0
    """Write <run>/checkpoint.pt every N steps (0 = every 10% of the budget), and at the end."""
    snapshots: str = "off"
    """Save the model's weights at these steps into <run>/snapshots/ (for grokrun analyze): log (up to 30, log-spaced from step 0, each at the evaluation at or after it) | N (every N steps) | off. The modular task's default is log."""
    softmax_dtype: str = "auto"
    """Precision of a classification loss's softmax (or StableMax): auto (the model's, at least float32) | float32 | float64."""
    reg: str = "none"
    """A penalty on the input-output map added to the loss: none | grokalign (λ (E‖J_x‖_F + E‖f(x) − J_x x‖²), Walker et al.) | jacobian (λ E‖J_x‖_F alone); its exact value is metrics.csv's penalty column."""
    reg_weight: float = 0.0
    """λ, the weight of --reg's penalty."""

    def check(self) -> None:
        every = f"in [0, {MAX_STEPS:,}]"
        check_range("batch-size", 1 <= self.batch_size <= MAX_STEPS, f"in [1, {MAX_STEPS:,}]", self.batch_size)
        check_range("max-steps", 1 <= self.max_steps <= MAX_STEPS, f"in [1, {MAX_STEPS:,}]", self.max_steps)
        check_range("eval-every", 0 <= self.eval_every <= MAX_STEPS, every + " (0 = once per epoch)", self.eval_every)
        check_choice("eval schedule", self.eval_schedule, EVAL_SCHEDULES)
        check_choice("softmax dtype", self.softmax_dtype, ("auto", "float32", "float64"))
        check_choice("regularizer", self.reg, REGULARIZERS)
        check_range("reg-weight", 0.0 <= self.reg_weight <= 1e6, "in [0, 1e6]", self.reg_weight)
        check_range("checkpoint-every", 0 <= self.checkpoint_every <= MAX_STEPS,
                    every + " (0 = every 10% of the budget)", self.checkpoint_every)
        snapshot_steps(self.snapshots, self.max_steps)  # a bad spec is its one-line error
        check_range("eval-points", 2 <= self.eval_points <= MAX_EVAL_POINTS, f"in [2, {MAX_EVAL_POINTS:,}]",
                    self.eval_points)
        check_range("train-eval-every", 1 <= self.train_eval_every <= MAX_STEPS, f"in [1, {MAX_STEPS:,}]",
                    self.train_eval_every)
        if self.stop_at_acc is not None:
            check_range("stop-at-acc", 0.0 < self.stop_at_acc <= 1.0, "in (0, 1]", self.stop_at_acc)
        if self.stop_at_loss is not None:
            check_range("stop-at-loss", 0.0 < self.stop_at_loss < math.inf, "a positive number", self.stop_at_loss)


@dataclass
class ModelConfig:
    lora_rank: int = 0
    """Train low-rank adapters (rank R, B initialized to zero) on every linear map of the model, its own weights frozen; 0 = train every weight."""
    lora_alpha: float | None = None
    """Scale of the adapters' product: alpha / rank (default alpha = rank, a scale of 1)."""
    init_from: str = ""
    """A run directory whose final weights (its checkpoint.pt) the model starts from, instead of its initialization."""
    dropout: float = 0.0
    """Dropout rate at training (off at evaluation): the decoder's feed-forward outputs, the MLPs' hidden activations, as openai/grok (0 = none)."""
    weight_noise: float = 0.0
    """Gaussian noise of this standard deviation added to every weight at each training forward pass, off at evaluation (openai/grok's weight_noise; 0 = none)."""

    def check(self) -> None:
        check_range("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)", self.dropout)
        check_range("weight-noise", 0.0 <= self.weight_noise <= 100.0, "in [0, 100] (0 = none)", self.weight_noise)
        check_range("lora-rank", 0 <= self.lora_rank <= 4096, "in [0, 4,096] (0 = no adapters)", self.lora_rank)
        if self.lora_alpha is not None:
            check_range("lora-alpha", self.lora_alpha > 0, "> 0", self.lora_alpha)
        if self.init_from and not (Path(self.init_from) / CHECKPOINT).is_file():
            raise UserError(f"--init-from {self.init_from}: no run directory with a {CHECKPOINT} there")


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        return os.cpu_count() or 1


def machine_threads() -> int:
    """The threads a run takes by default (--threads 0): OMP_NUM_THREADS where it is set to a count, else the cores
    this process may run on. Read when a run is configured, never by a launcher, so each run's count is its own."""
    told = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(told) if told.isdigit() and int(told) > 0 else machine_cores()


@dataclass
class RunBase:
    task: str = "modular"
    """Task to train."""
    seed: int = 0
    """Seed for the split, the initialization and the batch order (0 to 2^32 - 1)."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    dtype: str = "float32"
    """float32 | float64 | bfloat16 (autocast); precision changes grokking, so it is never implicit."""
    cuda_graph: str = "auto"
    """auto | on | off: replay the training step as CUDA graphs (CUDA only). auto is off until the graph path has been checked on a GPU."""
    compile: bool = False
    """Run the model's forward and backward through torch.compile (one run at a time: not with seeds stacked or --cuda-graph on). Compiling takes tens of seconds; see docs/benchmarks.md for where it wins."""
    threads: int = 0
    """CPU threads for the run's math, the same whichever launcher runs it (train, --jobs N workers, Ray tasks): float32 results differ in their last digits between thread counts. 0 = this machine's cores (OMP_NUM_THREADS where set), made the number when the run is configured and recorded in config.json; --jobs N needs N x threads cores (1 suits sweeps)."""
    flush_denormals: bool = True
    """On a CPU, take numbers below the smallest normal float (1.2e-38 in float32) as 0, as TensorFlow and XLA do there. Late in a long run, with the training loss near 1e-8, such numbers fill the backward pass and make a step several times slower (the Grokfast baseline at step 40,937, one thread: 127 ms against 50); --no-flush-denormals keeps them, as torch does by default. A GPU's math is not affected."""
    out: str = "results"
    """Parent folder of run directories."""
    name: str = ""
    """Run directory name (default <task>-<filter>-seed<seed>; a suffix is added if it exists)."""
    tensorboard: bool = False
    """Also write TensorBoard event files, in the run directory's tensorboard/ (pip install 'grokrun[tensorboard]')."""
    wandb: bool = False
    """Also log to Weights & Biases, a W&B run per run (pip install 'grokrun[wandb]'; WANDB_MODE=offline works without a network, then wandb sync)."""
    wandb_project: str = "grokrun"
    """W&B project of --wandb runs."""
    wandb_group: str = ""
    """W&B group of --wandb runs (default: the sweep's or comparison's folder name, for the runs in one)."""
    plugins: list = field(default_factory=list)
    """Plugin files (--plugin FILE.py, repeatable) whose tasks, filters, losses and optimizers the run uses."""
    filter: FilterBase = field(default_factory=FilterBase)  # (replaced by the composed FilterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def check(self) -> None:
        """The shared top-level settings (each section has its own check)."""
        check_choice("task", self.task, TASKS)
        check_choice("device", self.device, DEVICES)
        check_choice("cuda graph", self.cuda_graph, ("auto", "on", "off"))
        check_choice("dtype", self.dtype, DTYPES)
        check_range("seed", 0 <= self.seed <= MAX_SEED, f"in [0, {MAX_SEED:,}]", self.seed)
        check_range("threads", 0 <= self.threads <= 1024, "in [0, 1,024] (0 = this machine's cores)", self.threads)
        if not self.out:
            raise UserError("--out must name a folder (it is empty)")
        check_sinks(self)
        if self.name and ("/" in self.name or self.name.startswith(".") or not self.name.isprintable()
                          or self.name != self.name.strip()):
            raise UserError(f"--name must be a plain folder name: printable, not hidden (no leading '.'), without "
                            f"'/' and without spaces around it, got {self.name!r}")

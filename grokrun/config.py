"""Typed settings for one run, assembled from the registries: the shared sections are here, each task's
section is its module's Options (grokrun.tasks), and filters and optimizers are checked against theirs.

    cfg = resolve(config_file=None, overrides={"task": "modular", "filter.name": "ema"})

Resolution, later layers winning: defaults in code -> the task's DEFAULTS -> the filter's own defaults ->
either the task's published preset for that filter or, when a file is given, the file (TOML preset or a
run's config.json) -> flags. A file with a --filter other than its own keeps its other settings and takes
that filter's preset in place of its filter settings. A preset file holds only what differs from the
defaults. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from grokrun import snapshots
from grokrun.errors import UserError
from grokrun.filters import check_name as check_filter
from grokrun.filters import defaults_of as filter_defaults
from grokrun.filters import parts as filter_parts
from grokrun.optim import OPTIMIZERS
from grokrun.results import CHECKPOINT, CONFIG, flatten
from grokrun.tasks import TASKS, task


@dataclass
class FilterConfig:
    name: str = "none"
    """Gradient filter (none: the baseline); several apply in order, comma-separated (orthograd,ema)."""
    alpha: float = 0.98
    """EMA momentum, in [0, 1)."""
    lamb: float = 2.0
    """Amplification of the slow gradient, >= 0 (each filter has its own default: ema 2, ma 5)."""
    window_size: int = 100
    """MA window length, 1 to 1,000 (MA keeps that many gradients of the whole model)."""
    filter_type: str = "mean"
    """MA: add the mean or the sum of the window (mean | sum)."""
    warmup: bool = True
    """MA: leave gradients unchanged until the window is full (not the learning-rate --warmup-steps)."""
    start: int = 0
    """Withhold amplification for the first K steps; the filter state still updates."""


@dataclass
class OptimConfig:
    name: str = "adam"
    """Optimizer (adam couples weight decay as L2, as the Grokfast modular script; adamw decouples it)."""
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


@dataclass
class ModelConfig:
    lora_rank: int = 0
    """Train low-rank adapters (rank R, B initialized to zero) on every linear map of the model, its own weights frozen; 0 = train every weight."""
    lora_alpha: float | None = None
    """Scale of the adapters' product: alpha / rank (default alpha = rank, a scale of 1)."""
    init_from: str = ""
    """A run directory whose final weights (its checkpoint.pt) the model starts from, instead of its initialization."""


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
    out: str = "results"
    """Parent folder of run directories."""
    name: str = ""
    """Run directory name (default <task>-<filter>-seed<seed>; a suffix is added if it exists)."""
    tensorboard: bool = False
    """Also write TensorBoard event files, in the run directory's tensorboard/ (pip install 'grokrun[tensorboard]')."""
    filter: FilterConfig = field(default_factory=FilterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


# One section per registered task, named after it; only the chosen task's section is saved.
TASK_SECTIONS = tuple(TASKS)
RunConfig = dataclasses.make_dataclass(
    "RunConfig", [(name, task(name).Options, field(default_factory=task(name).Options)) for name in TASK_SECTIONS],
    bases=(RunBase,), namespace={"__module__": __name__, "__doc__": "A run: the shared settings and every task's section."})
SECTIONS = {f.name: f.default_factory for f in fields(RunConfig) if f.default_factory is not dataclasses.MISSING}
_SHARED = tuple(s for s in SECTIONS if s not in TASK_SECTIONS)
DEVICES = ("auto", "cpu", "cuda", "mps")
# Upper bounds, so a slip of the keyboard is an error and not a run that fills the memory or never ends.
MAX_STEPS = 10**9  # steps, and counts of steps (warmup, evaluation and checkpoint intervals, filter start)
MAX_SEED = 2**32 - 1
MAX_WINDOW = 1_000  # MA keeps window x the model's size of gradients: 1.7 GB for the modular decoder at 1,000
MAX_EVAL_POINTS = 10_000
DTYPES = ("float32", "float64", "bfloat16")
EVAL_SCHEDULES = ("linear", "log")


MAX_SEEDS_AT_ONCE = 10_000


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; "0-3,8" -> [0, 1, 2, 3, 8]; each seed in [0, MAX_SEED], repeats dropped."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            for seed in (first, last):
                if not 0 <= seed <= MAX_SEED:
                    raise UserError(f"--seeds: each seed must be in [0, {MAX_SEED:,}], got {seed}")
            if last < first:
                raise UserError(f"--seeds: a range runs upwards (such as 0-15), got {part!r}")
            if last - first + len(seeds) >= MAX_SEEDS_AT_ONCE:
                raise UserError(f"--seeds: at most {MAX_SEEDS_AT_ONCE:,} seeds at once, got {text!r}")
            seeds.extend(range(first, last + 1))
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        seeds = []
    if not seeds:
        raise UserError(f"--seeds must be seeds or ranges such as 0,1,2 or 0-15, got {text!r}")
    return list(dict.fromkeys(seeds))


# --- resolution ------------------------------------------------------------------------------------

def resolve(config_file: str | Path | dict | None, overrides: dict[str, Any]) -> RunConfig:
    """Build the run config from defaults, task defaults, preset or file, and flag overrides.

    ``config_file`` may also be a file's contents, already read (a saved config, completed with the
    settings added since). ``overrides`` maps config keys ("task", "filter.name", "optim.lr", "*.p") to
    values given on the command line; "*.x" means option x of the chosen task. Raises UserError on
    anything invalid.
    """
    if isinstance(config_file, dict):
        file_values = flatten(config_file)
    else:
        file_values = flatten(load_file(config_file)) if config_file else {}
    name = overrides.get("task", file_values.get("task", RunBase.task))
    filt = overrides.get("filter.name", file_values.get("filter.name", FilterConfig.name))
    _check_choice("task", name, TASKS)
    check_filter(filt)
    module = task(name)
    layers: list[dict[str, Any]] = [module.DEFAULTS, {f"filter.{k}": v for k, v in filter_defaults(filt).items()}]
    if config_file is None:  # (an empty dict is a file's contents: no preset)
        layers.append(_presets(module, filt))
    elif filt != file_values.get("filter.name", FilterConfig.name):
        # --filter names another filter than the file's: the file's filter settings were for that one, so the
        # asked filter comes with its preset (or its own defaults), as --filter does without a file
        layers.append({k: v for k, v in file_values.items() if not k.startswith("filter.")})
        layers.append(_presets(module, filt))
        file_values = {}
    layers.append(file_values)
    layers.append({_task_key(k, name): v for k, v in overrides.items()})
    cfg = RunConfig()
    for layer in layers:
        for key, value in layer.items():
            _set(cfg, key, value, name)
    validate(cfg)
    return cfg


def _presets(module, filt: str) -> dict[str, Any]:
    """The task's published settings for the filter, or for each of several in order (orthograd,ema: EMA's)."""
    if filt in module.PRESETS:
        return module.PRESETS[filt]
    merged: dict[str, Any] = {}
    for name in filter_parts(filt):
        merged.update(module.PRESETS.get(name, {}))
    return merged


def load_file(path: str | Path) -> dict[str, Any]:
    """A TOML preset or a run's config.json, as nested dicts."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG).is_file():
        path = path / CONFIG
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot parse {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot parse {path}: expected a table of settings")
    return data


def _task_key(key: str, task_name: str) -> str:
    """'*.width' -> 'modular.width' for the chosen task, if that task has the option."""
    if not key.startswith("*."):
        return key
    name = key[2:]
    if name not in {f.name for f in fields(SECTIONS[task_name])}:
        raise UserError(f"--{name.replace('_', '-')} does not apply to task {task_name}")
    return f"{task_name}.{name}"


def _set(cfg, key: str, value: Any, task_name: str) -> None:
    section, _, name = key.rpartition(".")
    if section:
        target = getattr(cfg, section) if section in SECTIONS and section in (task_name, *_SHARED) else None
    else:
        target = cfg if name not in SECTIONS else None
    known = {f.name: f for f in fields(target)} if target is not None else {}
    if name not in known:
        raise UserError(f"unknown setting {key!r}; valid settings: {', '.join(_all_keys(task_name))}")
    if value is not None or known[name].type != "float | None":
        value = _coerce(key, value, base_type(known[name].type))
    setattr(target, name, value)


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise UserError(f"--{_flag(key)} must be a finite number, got {value}") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"setting {key!r} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise UserError(f"--{_flag(key)} must be a finite number, got {value}")
    return value


def _flag(key: str) -> str:
    return key.rpartition(".")[2].replace("_", "-")


def base_type(annotation: str) -> type:
    """The Python type of a field's annotation (written as a string under postponed annotations)."""
    return {"str": str, "int": int, "float": float, "bool": bool, "float | None": float}[annotation]


def _all_keys(task_name: str) -> list[str]:
    keys = [f.name for f in fields(RunConfig) if f.name not in SECTIONS]
    for section, cls in SECTIONS.items():
        if section in TASK_SECTIONS and section != task_name:
            continue
        keys += [f"{section}.{f.name}" for f in fields(cls)]
    return keys


def _check_choice(what: str, value: Any, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def _check_range(flag: str, ok: bool, rule: str, value: Any) -> None:
    if not ok:
        raise UserError(f"--{flag} must be {rule}, got {value}")


def validate(cfg) -> None:
    """Every check of a run config, the task's own last. Raises UserError naming the flag and the valid range."""
    f, o, t = cfg.filter, cfg.optim, cfg.train
    _check_choice("task", cfg.task, TASKS)
    check_filter(f.name)
    _check_choice("device", cfg.device, DEVICES)
    _check_choice("cuda graph", cfg.cuda_graph, ("auto", "on", "off"))
    _check_choice("dtype", cfg.dtype, DTYPES)
    _check_choice("optimizer", o.name, OPTIMIZERS)
    _check_choice("filter type", f.filter_type, ("mean", "sum"))
    _check_range("alpha", 0.0 <= f.alpha < 1.0, "in [0, 1)", f.alpha)
    _check_range("lamb", f.lamb >= 0, ">= 0", f.lamb)
    _check_range("window-size", 1 <= f.window_size <= MAX_WINDOW, f"in [1, {MAX_WINDOW:,}]", f.window_size)
    _check_range("filter-start", 0 <= f.start <= MAX_STEPS, f"in [0, {MAX_STEPS:,}]", f.start)
    _check_range("lr", o.lr > 0, "> 0", o.lr)
    _check_range("beta1", 0.0 <= o.beta1 < 1.0, "in [0, 1)", o.beta1)
    _check_range("beta2", 0.0 <= o.beta2 < 1.0, "in [0, 1)", o.beta2)
    _check_range("eps", 0.0 < o.eps < 1.0, "in (0, 1)", o.eps)
    _check_range("weight-decay", o.weight_decay >= 0, ">= 0", o.weight_decay)
    _check_range("warmup-steps", 0 <= o.warmup_steps <= MAX_STEPS, f"in [0, {MAX_STEPS:,}]", o.warmup_steps)
    _check_range("clip-grad", o.clip_grad >= 0, ">= 0 (0 = no clipping)", o.clip_grad)
    _check_choice("decay target", o.decay_to, ("zero", "init"))
    _check_range("batch-size", 1 <= t.batch_size <= MAX_STEPS, f"in [1, {MAX_STEPS:,}]", t.batch_size)
    _check_range("max-steps", 1 <= t.max_steps <= MAX_STEPS, f"in [1, {MAX_STEPS:,}]", t.max_steps)
    _check_range("eval-every", 0 <= t.eval_every <= MAX_STEPS, f"in [0, {MAX_STEPS:,}] (0 = once per epoch)",
                 t.eval_every)
    _check_choice("eval schedule", t.eval_schedule, EVAL_SCHEDULES)
    _check_choice("softmax dtype", t.softmax_dtype, ("auto", "float32", "float64"))
    _check_range("checkpoint-every", 0 <= t.checkpoint_every <= MAX_STEPS,
                 f"in [0, {MAX_STEPS:,}] (0 = every 10% of the budget)", t.checkpoint_every)
    snapshots.steps(t.snapshots, t.max_steps)  # a bad spec is its one-line error
    _check_range("eval-points", 2 <= t.eval_points <= MAX_EVAL_POINTS, f"in [2, {MAX_EVAL_POINTS:,}]", t.eval_points)
    _check_range("train-eval-every", 1 <= t.train_eval_every <= MAX_STEPS, f"in [1, {MAX_STEPS:,}]",
                 t.train_eval_every)
    m = cfg.model
    _check_range("lora-rank", 0 <= m.lora_rank <= 4096, "in [0, 4,096] (0 = no adapters)", m.lora_rank)
    if m.lora_alpha is not None:
        _check_range("lora-alpha", m.lora_alpha > 0, "> 0", m.lora_alpha)
    if m.init_from and not (Path(m.init_from) / CHECKPOINT).is_file():
        raise UserError(f"--init-from {m.init_from}: no run directory with a {CHECKPOINT} there")
    if t.stop_at_acc is not None:
        _check_range("stop-at-acc", 0.0 < t.stop_at_acc <= 1.0, "in (0, 1]", t.stop_at_acc)
    _check_range("seed", 0 <= cfg.seed <= MAX_SEED, f"in [0, {MAX_SEED:,}]", cfg.seed)
    if not cfg.out:
        raise UserError("--out must name a folder (it is empty)")
    if cfg.name and ("/" in cfg.name or cfg.name.startswith(".") or "\0" in cfg.name):
        raise UserError(f"--name must be a plain folder name, not hidden (no leading '.') and without '/', "
                        f"got {cfg.name!r}")
    task(cfg.task).validate(getattr(cfg, cfg.task))


def to_dict(cfg) -> dict[str, Any]:
    """The resolved config as saved in config.json: only the active task's section."""
    data = dataclasses.asdict(cfg)
    for section in TASK_SECTIONS:
        if section != cfg.task:
            data.pop(section)
    return data

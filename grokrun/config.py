"""Typed settings for one run: dataclasses whose field docstrings are the CLI's --help.

    cfg = resolve(config_file=None, overrides={"task": "modular", "filter.name": "ema"})

Resolution, later layers winning: defaults in code -> the task's defaults -> either the published preset
for (task, filter) or, when a file is given, the file (TOML preset or a run's config.json) -> flags.
A preset file holds only what differs from the defaults. Importing this module does not import torch,
so --help is instant; ``validate`` loads the task's module for its own checks.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A mistake the user can fix: the CLI prints it as one line and exits with status 2."""


@dataclass
class FilterConfig:
    name: str = "none"
    """Gradient filter: none | ema | ma."""
    alpha: float = 0.98
    """EMA momentum, in [0, 1)."""
    lamb: float = 2.0
    """Amplification of the slow gradient, >= 0."""
    window_size: int = 100
    """MA window length, >= 1."""
    filter_type: str = "mean"
    """MA: add the mean or the sum of the window (mean | sum)."""
    warmup: bool = True
    """MA: leave gradients unchanged until the window is full."""
    start: int = 0
    """Withhold amplification for the first K steps; the filter state still updates."""


@dataclass
class OptimConfig:
    name: str = "adam"
    """Optimizer: adam | adamw | sgd (adam couples weight decay as L2, as the Grokfast modular script)."""
    lr: float = 1e-3
    """Peak learning rate."""
    beta1: float = 0.9
    """Adam beta1 (SGD momentum)."""
    beta2: float = 0.98
    """Adam beta2."""
    weight_decay: float = 0.0
    """Weight decay."""
    warmup_steps: int = 10
    """Linear learning-rate warmup over the first N updates, as published: update k runs at (k-1)/N of the rate."""
    clip_grad: float = 0.0
    """Clip the gradient's total L2 norm to this before the filter sees it (0 = no clipping)."""


@dataclass
class TrainConfig:
    batch_size: int = 512
    """Training batch size."""
    max_steps: int = 10_000
    """Budget of optimization steps."""
    eval_every: int = 0
    """Evaluate every N steps on the full train and validation sets; 0 = once per epoch."""
    stop_at_acc: float | None = None
    """Stop once validation accuracy reaches this value (e.g. 0.95)."""
    eval_schedule: str = "linear"
    """linear (every --eval-every steps) | log (every step below 30, every 10th below 150, then --eval-points log-spaced steps to the budget)."""
    eval_points: int = 150
    """Log schedule: how many log-spaced evaluations from step 150 to the budget."""
    checkpoint_every: int = 0
    """Write <run>/checkpoint.pt every N steps (0 = every 10% of the budget), and at the end."""


@dataclass
class ModularConfig:
    op: str = "mul"
    """Operation: mul | add | sub | div | x2+y2 | x2+xy+y2 | x2+xy+y2+x | x3+xy | x3+xy2+y | s5 | s5conj | s5aba."""
    p: int = 97
    """Modulus (prime for div); unused by the s5 operations."""
    train_frac: float = 0.5
    """Fraction of the table used for training, in (0, 1)."""
    layers: int = 2
    """Decoder layers."""
    width: int = 128
    """Model width."""
    heads: int = 4
    """Attention heads."""
    block: str = "grokfast"
    """grokfast (as published: the stream is replaced by its LayerNorm before attention) | prenorm (textbook pre-LN)."""


@dataclass
class MnistConfig:
    data_dir: str = "data"
    """Dataset folder (MNIST goes in <data-dir>/MNIST/raw)."""
    download: bool = True
    """Download the dataset when it is missing."""
    train_points: int = 1000
    """Training images: the first N of the 60,000."""
    depth: int = 3
    """MLP layers (linear maps), >= 1."""
    width: int = 200
    """MLP hidden width."""
    activation: str = "relu"
    """relu | tanh | gelu | sigmoid."""
    init_scale: float = 8.0
    """Every initial parameter is multiplied by this (Omnigrok's large initialization)."""
    loss: str = "mse"
    """mse (on one-hot targets, as published) | ce (cross-entropy)."""


@dataclass
class ImdbConfig:
    data_dir: str = "data"
    """Dataset folder (the Stanford archive is extracted to <data-dir>/aclImdb)."""
    download: bool = True
    """Download the dataset when it is missing."""
    data_file: str = ""
    """A CSV with columns review,sentiment (positive | negative), as the Grokfast script reads; replaces the archive."""
    size: int = 1000
    """Reviews: a seeded, label-balanced sample of the archive's train split, or the CSV's first N rows."""
    train_frac: float = 0.75
    """Fraction used for training, in (0, 1); the split is seeded and stratified by label."""
    vocab_size: int = 1000
    """Most frequent training words kept (id 0 is padding)."""
    seq_len: int = 500
    """Tokens per review: left-padded, or cut to the first N."""
    embedding_dim: int = 64
    """Word embedding size."""
    width: int = 256
    """LSTM hidden size."""
    layers: int = 2
    """LSTM layers."""
    init_scale: float = 6.0
    """Every initial parameter is multiplied by this."""


@dataclass
class Qm9Config:
    data_dir: str = "data"
    """Dataset folder (QM9 goes in <data-dir>/QM9)."""
    download: bool = True
    """Download the dataset when it is missing."""
    size: int = 100
    """Molecules: the first N of QM9."""
    train_frac: float = 0.5
    """Fraction used for training, in (0, 1); the split is seeded."""
    target: int = 1
    """Regression target, a column of QM9's y (0-18; 1 = isotropic polarizability alpha)."""
    init_scale: float = 3.0
    """Every initial parameter is multiplied by this."""


@dataclass
class RunConfig:
    task: str = "modular"
    """Task to train."""
    seed: int = 0
    """Seed for the split, the initialization and the batch order."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    dtype: str = "float32"
    """float32 | float64 | bfloat16 (autocast); precision changes grokking, so it is never implicit."""
    out: str = "results"
    """Parent folder of run directories."""
    name: str = ""
    """Run directory name (default <task>-<filter>-seed<seed>; a suffix is added if it exists)."""
    filter: FilterConfig = field(default_factory=FilterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    modular: ModularConfig = field(default_factory=ModularConfig)
    mnist: MnistConfig = field(default_factory=MnistConfig)
    imdb: ImdbConfig = field(default_factory=ImdbConfig)
    qm9: Qm9Config = field(default_factory=Qm9Config)


SECTIONS = {f.name: f.default_factory for f in fields(RunConfig) if f.default_factory is not dataclasses.MISSING}
TASK_SECTIONS = ("modular", "mnist", "imdb", "qm9")  # sections that belong to one task; only the active one is saved
_SHARED = tuple(s for s in SECTIONS if s not in TASK_SECTIONS)
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float64", "bfloat16")
EVAL_SCHEDULES = ("linear", "log")
OPTIMIZERS = ("adam", "adamw", "sgd")

# What differs from the defaults above for each task, then for each published run (DESIGN.md table).
# configs/<task>_<filter>.toml hold the same values; tests/test_configs.py keeps the two equal.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "modular": {},
    # Omnigrok's MNIST script: AdamW with torch's default betas, no warmup; evaluations dense early.
    "mnist": {"optim.name": "adamw", "optim.beta2": 0.999, "optim.weight_decay": 0.01, "optim.warmup_steps": 0,
              "train.batch_size": 200, "train.max_steps": 100_000, "train.eval_schedule": "log"},
    # Grokfast's IMDb script: AdamW with torch's default betas, gradient norm clipped at 5.
    "imdb": {"optim.name": "adamw", "optim.lr": 3e-4, "optim.beta2": 0.999, "optim.weight_decay": 1.0,
             "optim.warmup_steps": 0, "optim.clip_grad": 5.0, "train.batch_size": 50, "train.max_steps": 10_000,
             "train.eval_schedule": "log"},
    # Grokfast's QM9 script: AdamW with torch's default betas, no weight decay; a regression (no accuracy).
    "qm9": {"optim.name": "adamw", "optim.beta2": 0.999, "optim.weight_decay": 0.0, "optim.warmup_steps": 0,
            "train.batch_size": 32, "train.max_steps": 100_000, "train.eval_schedule": "log"},
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "modular": {
        "none": {"train.max_steps": 100_000},  # the baseline groks at ~40k steps
        "ema": {"filter.alpha": 0.98, "filter.lamb": 2.0, "optim.weight_decay": 0.005},
        "ma": {"filter.window_size": 100, "filter.lamb": 5.0, "optim.weight_decay": 0.01},
    },
    "mnist": {
        "none": {},  # the baseline groks at ~44k steps
        "ema": {"filter.alpha": 0.8, "filter.lamb": 0.1, "optim.weight_decay": 2.0},
    },
    "imdb": {
        "none": {},
        "ema": {"filter.alpha": 0.98, "filter.lamb": 2.0, "optim.weight_decay": 10.0},
    },
    "qm9": {
        "none": {},
        "ema": {"filter.alpha": 0.9, "filter.lamb": 1.0, "optim.weight_decay": 0.01},
    },
}


# --- field docs and flags --------------------------------------------------------------------------

def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, whitespace collapsed."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


# Flag names that are not simply the field name with dashes.
_FLAG_NAMES = {"filter.name": "filter", "filter.start": "filter-start", "optim.name": "optimizer"}


@dataclass(frozen=True)
class Flag:
    """One CLI option: its name, the config key it sets ("optim.lr"; "*.width" for a task option)."""
    name: str
    key: str
    type: type
    help: str
    panel: str
    default: Any


def flags() -> list[Flag]:
    """Every config field as a CLI option. Task options share one flag across tasks (--width)."""
    out: list[Flag] = []
    top_docs = field_docs(RunConfig)
    for f in fields(RunConfig):
        if f.name in SECTIONS:
            continue
        out.append(Flag(f.name.replace("_", "-"), f.name, _base_type(f.type), top_docs[f.name], "Run",
                        None if f.default == "" else f.default))
    seen: dict[str, int] = {}
    task_defaults: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        for f in fields(cls):
            key = f"{section}.{f.name}"
            task_option = section in TASK_SECTIONS
            name = _FLAG_NAMES.get(key, f.name.replace("_", "-"))
            if task_option:
                task_defaults.setdefault(name, []).append(f"{section}: {f.default}")
            if task_option and name in seen:  # the same option of another task: one flag serves both
                continue
            seen[name] = len(out)
            panel = "Task" if task_option else section.capitalize()
            out.append(Flag(name, f"*.{f.name}" if task_option else key, _base_type(f.type), docs[f.name],
                            panel, None if f.default == "" else f.default))
    for name, defaults in task_defaults.items():  # each task option names its tasks, and their defaults
        flag = out[seen[name]]
        tasks = ", ".join(d.partition(": ")[0] for d in defaults)
        default = ", ".join(defaults) if len({d.partition(": ")[2] for d in defaults}) > 1 else flag.default
        out[seen[name]] = dataclasses.replace(flag, help=f"({tasks}) {flag.help}", default=default)
    return out


def _base_type(annotation: str) -> type:
    return {"str": str, "int": int, "float": float, "bool": bool, "float | None": float}[annotation]


# --- resolution ------------------------------------------------------------------------------------

def resolve(config_file: str | Path | dict | None, overrides: dict[str, Any]) -> RunConfig:
    """Build the run config from defaults, task defaults, preset or file, and flag overrides.

    ``config_file`` may also be a file's contents, already read (a saved config, completed with the
    settings added since). ``overrides`` maps config keys ("task", "filter.name", "optim.lr", "*.p") to
    values given on the command line; "*.x" means option x of the chosen task. Raises ConfigError on
    anything invalid.
    """
    if isinstance(config_file, dict):
        file_values = flatten(config_file)
    else:
        file_values = flatten(load_file(config_file)) if config_file else {}
    task = overrides.get("task", file_values.get("task", RunConfig.task))
    filt = overrides.get("filter.name", file_values.get("filter.name", FilterConfig.name))
    _check_choice("task", task, TASK_DEFAULTS)
    layers: list[dict[str, Any]] = [TASK_DEFAULTS[task]]
    if config_file is None:  # (an empty dict is a file's contents: no preset)
        _check_choice("filter", filt, PRESETS[task])
        layers.append(PRESETS[task][filt])
    layers.append(file_values)
    layers.append({_task_key(k, task): v for k, v in overrides.items()})
    cfg = RunConfig()
    for layer in layers:
        for key, value in layer.items():
            _set(cfg, key, value, task)
    validate(cfg)
    return cfg


def load_file(path: str | Path) -> dict[str, Any]:
    """A TOML preset or a run's config.json, as nested dicts."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"cannot parse {path}: expected a table of settings")
    return data


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level: {"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _task_key(key: str, task: str) -> str:
    """'*.width' -> 'modular.width' for the chosen task, if that task has the option."""
    if not key.startswith("*."):
        return key
    name = key[2:]
    if name not in {f.name for f in fields(SECTIONS[task]())}:
        raise ConfigError(f"--{name.replace('_', '-')} does not apply to task {task}")
    return f"{task}.{name}"


def _set(cfg: RunConfig, key: str, value: Any, task: str) -> None:
    section, _, name = key.rpartition(".")
    if section:
        target = getattr(cfg, section) if section in SECTIONS and section in (task, *_SHARED) else None
    else:
        target = cfg if name not in SECTIONS else None
    known = {f.name: f for f in fields(target)} if target is not None else {}
    if name not in known:
        raise ConfigError(f"unknown setting {key!r}; valid settings: {', '.join(_all_keys(task))}")
    if value is not None or known[name].type != "float | None":
        value = _coerce(key, value, _base_type(known[name].type))
    setattr(target, name, value)


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"setting {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _all_keys(task: str) -> list[str]:
    keys = [f.name for f in fields(RunConfig) if f.name not in SECTIONS]
    for section, cls in SECTIONS.items():
        if section in TASK_SECTIONS and section != task:
            continue
        keys += [f"{section}.{f.name}" for f in fields(cls)]
    return keys


def _check_choice(what: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def _check_range(flag: str, ok: bool, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"--{flag} must be {rule}, got {value}")


def validate(cfg: RunConfig) -> None:
    """Every check that needs no task code. Raises ConfigError naming the flag and the valid range."""
    f, o, t = cfg.filter, cfg.optim, cfg.train
    _check_choice("task", cfg.task, TASK_DEFAULTS)
    _check_choice("filter", f.name, PRESETS[cfg.task])
    _check_choice("device", cfg.device, DEVICES)
    _check_choice("dtype", cfg.dtype, DTYPES)
    _check_choice("optimizer", o.name, OPTIMIZERS)
    _check_choice("filter type", f.filter_type, ("mean", "sum"))
    _check_range("alpha", 0.0 <= f.alpha < 1.0, "in [0, 1)", f.alpha)
    _check_range("lamb", f.lamb >= 0, ">= 0", f.lamb)
    _check_range("window-size", f.window_size >= 1, ">= 1", f.window_size)
    _check_range("filter-start", f.start >= 0, ">= 0", f.start)
    _check_range("lr", o.lr > 0, "> 0", o.lr)
    _check_range("beta1", 0.0 <= o.beta1 < 1.0, "in [0, 1)", o.beta1)
    _check_range("beta2", 0.0 <= o.beta2 < 1.0, "in [0, 1)", o.beta2)
    _check_range("weight-decay", o.weight_decay >= 0, ">= 0", o.weight_decay)
    _check_range("warmup-steps", o.warmup_steps >= 0, ">= 0", o.warmup_steps)
    _check_range("clip-grad", o.clip_grad >= 0, ">= 0 (0 = no clipping)", o.clip_grad)
    _check_range("batch-size", t.batch_size >= 1, ">= 1", t.batch_size)
    _check_range("max-steps", t.max_steps >= 1, ">= 1", t.max_steps)
    _check_range("eval-every", t.eval_every >= 0, ">= 0 (0 = once per epoch)", t.eval_every)
    _check_choice("eval schedule", t.eval_schedule, EVAL_SCHEDULES)
    _check_range("checkpoint-every", t.checkpoint_every >= 0, ">= 0 (0 = every 10% of the budget)", t.checkpoint_every)
    _check_range("eval-points", t.eval_points >= 2, ">= 2", t.eval_points)
    if t.stop_at_acc is not None:
        _check_range("stop-at-acc", 0.0 < t.stop_at_acc <= 1.0, "in (0, 1]", t.stop_at_acc)
    if cfg.name and ("/" in cfg.name or cfg.name in (".", "..")):
        raise ConfigError(f"--name must be a plain folder name, got {cfg.name!r}")
    from grokrun.tasks import task_module  # light: the registry only, no torch

    task_module(cfg.task).validate(getattr(cfg, cfg.task))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as saved in config.json: only the active task's section."""
    data = dataclasses.asdict(cfg)
    for section in TASK_SECTIONS:
        if section != cfg.task:
            data.pop(section)
    return data

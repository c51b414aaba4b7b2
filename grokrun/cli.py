"""grokrun's command line: thin front-ends over config.resolve and engine.train.

    grokrun train --task modular --filter ema

Every config field is a flag, generated once from the dataclasses in config.py (their docstrings are
the help). Heavy imports (torch, tasks) happen inside the command bodies, so --help is instant.
"""

import inspect
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

from grokrun.config import ConfigError, flags, resolve
from grokrun.tasks import TASKS

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Reproducible grokking experiments with Grokfast gradient filters.")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

@app.callback()
def _main() -> None:
    """Reproducible grokking experiments with Grokfast gradient filters."""


EXIT_CODES = {"completed": 0, "stopped_at_target": 0, "diverged": 1, "interrupted": 130}


def fail(message: str) -> NoReturn:
    """A mistake the user can fix: one line, exit status 2, no traceback."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _flag_parameters() -> tuple[list[inspect.Parameter], dict[str, str]]:
    """One keyword parameter per config field; None means 'not given', so presets and files show through."""
    params, keys = [], {}
    for flag in flags():
        decl = f"--{flag.name}/--no-{flag.name}" if flag.type is bool else f"--{flag.name}"
        help = flag.help
        if flag.key == "task":
            help += f" One of: {', '.join(TASKS)}."
        if flag.default is not None:
            help += f" [dim]\\[default: {flag.default}][/dim]"
        option = typer.Option(decl, help=help, rich_help_panel=flag.panel, show_default=False)
        name = flag.name.replace("-", "_")
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[flag.type], option]))
        keys[name] = flag.key
    return params, keys


FLAG_PARAMETERS, FLAG_KEYS = _flag_parameters()


def with_config_flags(func):
    """Give a command every config flag: its ``**values`` receives them by Python name."""
    sig = inspect.signature(func, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    func.__signature__ = sig.replace(parameters=[*own, *FLAG_PARAMETERS])
    return func


def overrides_from(values: dict[str, Any]) -> dict[str, Any]:
    return {FLAG_KEYS[name]: value for name, value in values.items() if value is not None}


ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML preset (configs/*.toml) or a run's config.json; flags override it.",
    rich_help_panel="Run", show_default=False)]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel="Run")]


@app.command()
@with_config_flags
def train(config: ConfigOption = None, quiet: QuietOption = False, **values: Any) -> None:
    """Train one run and write its run directory (config.json, metrics.csv, summary.json).

    [b]--filter ema[/b] and [b]--filter ma[/b] apply the task's published settings (configs/<task>_<filter>.toml);
    any flag given overrides them. With [b]--config[/b] the file replaces the preset.
    """
    try:
        cfg = resolve(config, overrides_from(values))
        from grokrun.engine import train as run_training

        run_dir, summary = run_training(cfg, quiet=quiet, console=out)
    except ConfigError as e:
        fail(str(e))
    print_headline(run_dir, summary)
    raise typer.Exit(EXIT_CODES[summary["status"]])


def print_headline(run_dir: Path, s: dict[str, Any]) -> None:
    """Where the run went and what it found: steps and time to 95% val acc, ms/step, peak memory."""
    status = {"completed": "completed", "stopped_at_target": "stopped at target",
              "interrupted": "[yellow]interrupted[/yellow]", "diverged": "[red]diverged[/red]"}[s["status"]]
    out.print(f"run: {run_dir} ({status} after {s['steps']:,} steps)")
    if s["status"] == "diverged":
        out.print("[red]the loss became non-finite[/red]; try a smaller --lamb or --lr")
    step95, wall95 = s["steps_to_val_acc"]["0.95"], s["wall_s_to_val_acc"]["0.95"]
    if s["best_val_acc"] is None:
        head = f"min val loss {s['min_val_loss']:.4g} at step {s['min_val_loss_step']:,}"
    elif step95 is None:
        head = f"95% val acc not reached in {s['steps']:,} steps (best {s['best_val_acc']:.3f})"
    else:
        head = f"95% val acc at step {step95:,} ({wall95:.1f} s)"
    ms = f"{s['ms_per_step']:.2f} ms/step" if s["ms_per_step"] is not None else "no steps"
    out.print(f"{head} · {ms} · peak {s['peak_memory_mb']:.0f} MB · {s['device']}")


def main() -> None:
    app()

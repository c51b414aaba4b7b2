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


def with_config_flags(exclude: tuple[str, ...] = ()):
    """Give a command every config flag but ``exclude``: its ``**values`` receives them by Python name."""
    def decorate(func):
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [p for p in FLAG_PARAMETERS if p.name not in exclude]
        func.__signature__ = sig.replace(parameters=[*own, *extra])
        return func
    return decorate


def _flags_given(values: dict[str, Any]) -> list[str]:
    """The config flags given on the command line, as typed (--max-steps)."""
    return [f"--{name.replace('_', '-')}" for name, value in values.items() if value is not None]


def overrides_from(values: dict[str, Any]) -> dict[str, Any]:
    return {FLAG_KEYS[name]: value for name, value in values.items() if value is not None}


ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML preset (configs/*.toml) or a run's config.json; flags override it.",
    rich_help_panel="Run", show_default=False)]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel="Run")]
ResumeOption = Annotated[Optional[Path], typer.Option(
    "--resume", help="Continue an interrupted run directory from its checkpoint, to its original budget.",
    rich_help_panel="Run", show_default=False)]


@app.command()
@with_config_flags()
def train(config: ConfigOption = None, resume: ResumeOption = None, quiet: QuietOption = False,
          **values: Any) -> None:
    """Train one run and write its run directory (config.json, metrics.csv, summary.json).

    [b]--filter ema[/b] and [b]--filter ma[/b] apply the task's published settings (configs/<task>_<filter>.toml);
    any flag given overrides them. With [b]--config[/b] the file replaces the preset. The defaults shown are
    the code's; a task's own (configs/<task>_baseline.toml) replace them.
    """
    from grokrun.engine import StoppedAtOnce

    try:
        if resume is not None:
            cfg = _resumable(resume, config, values)
        else:
            cfg = resolve(config, overrides_from(values))
        from grokrun.engine import train as run_training

        run_dir, summary = run_training(cfg, quiet=quiet, console=out, resume=resume)
    except ConfigError as e:
        fail(str(e))
    except StoppedAtOnce as e:
        err.print(f"[yellow]stopped at once[/yellow] (a second interrupt): {e.run_dir} has no summary; "
                  f"grokrun train --resume {e.run_dir} continues from its last checkpoint")
        raise typer.Exit(130)
    except KeyboardInterrupt:  # before training began (loading data, building the model)
        err.print("[yellow]interrupted[/yellow] before training began")
        raise typer.Exit(130)
    print_headline(run_dir, summary)
    raise typer.Exit(EXIT_CODES[summary["status"]])


def _resumable(run_dir: Path, config: Optional[Path], values: dict[str, Any]):
    """The config of a run to resume; exits 0 at once if the run has nothing left to do."""
    import json

    from grokrun.results import FINAL

    given = ["--config"] * (config is not None) + _flags_given(values)
    if given:
        raise ConfigError(f"--resume continues a run as it was configured; drop {given[0]}")
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (it has no config.json)")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("status") in FINAL:
        out.print(f"{run_dir} has already ended ({summary['status'].replace('_', ' ')} after "
                  f"{summary.get('steps', 0):,} steps); nothing to resume")
        raise typer.Exit(0)
    return resolve(run_dir / "config.json", {})


def print_headline(run_dir: Path, s: dict[str, Any]) -> None:
    """Where the run went and what it found: steps and time to 95% val acc, ms/step, peak memory."""
    status = {"completed": "completed", "stopped_at_target": "stopped at target",
              "interrupted": "[yellow]interrupted[/yellow]", "diverged": "[red]diverged[/red]"}[s["status"]]
    out.print(f"run: {run_dir} ({status} after {s['steps']:,} steps)")
    if s["status"] == "diverged":
        out.print(f"[red]diverged at step {s['diverged_at']:,}[/red]: the loss or a gradient became non-finite; "
                  "try a smaller --lamb or --lr")
    if s["status"] == "interrupted":
        out.print(f"checkpoint written at step {s['steps']:,}; continue with: grokrun train --resume {run_dir}")
    step95, wall95 = s["steps_to_val_acc"]["0.95"], s["wall_s_to_val_acc"]["0.95"]
    if s["min_val_loss"] is None:
        head = "no finite validation loss"
    elif s["best_val_acc"] is None:
        head = f"min val loss {s['min_val_loss']:.4g} at step {s['min_val_loss_step']:,}"
    elif step95 is None:
        head = f"95% val acc not reached in {s['steps']:,} steps (best {s['best_val_acc']:.3f})"
    else:
        head = f"95% val acc at step {step95:,} ({wall95:.1f} s)"
    ms = f"{s['ms_per_step']:.2f} ms/step" if s["ms_per_step"] is not None else "no steps"
    out.print(f"{head} · {ms} · peak {s['peak_memory_mb']:.0f} MB · {s['device']}")


# --- compare and plot ----------------------------------------------------------------------------------

PathsArgument = Annotated[Optional[list[Path]], typer.Argument(
    help="Config files, one variant each (the first is the baseline); or run directories and folders of them, "
         "tabulated as they are, without training.", show_default=False)]
ThresholdOption = Annotated[float, typer.Option(
    help="Validation accuracy whose first crossing the table and plots report.", rich_help_panel="Compare")]
FormatOption = Annotated[str, typer.Option("--format", help="Figure format: png | svg | pdf.",
                                           rich_help_panel="Compare")]
TRAINING_ONLY = ("--filter", "--seeds", "--jobs")


@app.command()
@with_config_flags(exclude=("filter", "seed", "out", "name"))
def compare(
    paths: PathsArgument = None,
    filters: Annotated[Optional[list[str]], typer.Option(
        "--filter", help="Filter to compare with the baseline (none), with the task's published settings; "
        "repeat for more. [dim]\\[default: every published filter of the task][/dim]",
        rich_help_panel="Compare", show_default=False)] = None,
    seeds: Annotated[Optional[str], typer.Option(
        help="Seeds, comma-separated. [dim]\\[default: 0,1,2][/dim]", rich_help_panel="Compare",
        show_default=False)] = None,
    jobs: Annotated[int, typer.Option(help="Runs trained at once, in parallel processes.",
                                      rich_help_panel="Compare")] = 1,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="Output folder. [dim]\\[default: the newest results/compare-<task>-* with the same variants, "
        "else a new results/compare-<task>-<time>][/dim]", rich_help_panel="Compare", show_default=False)] = None,
    threshold: ThresholdOption = 0.95,
    fmt: FormatOption = "png",
    quiet: QuietOption = False,
    **values: Any,
) -> None:
    """Train variants on the same seeds, then write the comparison table and overlay plot.

    [b]grokrun compare --task modular --filter ema[/b] trains the published baseline and EMA runs on seeds 0,1,2;
    flags such as [b]--max-steps[/b] apply to every variant. Runs already complete in the output folder are
    reused, so running the same command again trains nothing. Given run directories, it only tabulates them.
    """
    _check_reporting(threshold, fmt)
    overrides = overrides_from(values)
    if paths and all(p.is_dir() for p in paths):
        given = [name for name, v in zip(TRAINING_ONLY, (filters, seeds, jobs != 1)) if v] + _flags_given(values)
        if given:
            fail(f"{given[0]} applies to training; run directories are tabulated as they are (give config files "
                 "or --task/--filter to train)")
        _tabulate_existing(paths, out_dir, threshold, fmt)
        return
    from grokrun import compare as cmp
    from grokrun.engine import StoppedAtOnce

    try:
        if paths:
            for p in paths:
                if not p.exists():
                    raise ConfigError(f"no such config file or run directory: {p}")
                if p.is_dir():
                    raise ConfigError("give config files or run directories, not both")
            if filters:
                raise ConfigError("give config files or --filter, not both")
            variants = cmp.variants_from_files(paths, overrides)
        else:
            variants = cmp.variants_from_filters(overrides.get("task"), filters or [], overrides)
        seed_list = cmp.parse_seeds(seeds or "0,1,2")
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        folder, found = cmp.output_folder(out_dir, variants)
        planned = cmp.plan(folder, variants, seed_list)
    except ConfigError as e:
        fail(str(e))
    cmp.write_manifest(folder, variants, seed_list)
    todo = sum(j.action != "reuse" for j in planned)
    resumed = sum(j.action == "resume" for j in planned)
    note = " (continuing the comparison found there; --out DIR starts another)" if found else ""
    out.print(f"compare: {_count(len(variants), 'variant')} × {_count(len(seed_list), 'seed')} in {folder}{note}")
    out.print(f"{_count(todo - resumed, 'run')} to train, " + (f"{resumed} to resume, " if resumed else "")
              + f"{len(planned) - todo} already complete and reused")
    done = [len(planned) - todo]

    def report(job, summary: dict) -> None:
        from grokrun.results import read_run
        from grokrun.table import brief

        done[0] += 1
        out.print(f"[{done[0]}/{len(planned)}] {job.variant} seed {job.seed}: "
                  f"{brief(read_run(job.path), threshold)}")

    try:
        finished = cmp.run_jobs(planned, jobs, quiet, out, report)
    except ConfigError as e:
        fail(str(e))
    except KeyboardInterrupt:  # between runs; a run in progress ends itself as "interrupted"
        finished = False
    except StoppedAtOnce as e:  # a second Ctrl-C: that run has no summary; its checkpoint remains
        err.print(f"[yellow]stopped at once[/yellow] (a second interrupt) in {e.run_dir}")
        finished = False
    from grokrun.results import is_run_dir, read_run

    by_variant = [(v.name, [read_run(j.path) for j in planned if j.variant == v.name and is_run_dir(j.path)])
                  for v in variants]
    by_variant = [(n, r) for n, r in by_variant if r]
    if by_variant:
        _report_table(by_variant, folder, threshold, fmt, details=_variant_lines(variants))
    if jobs > 1 and todo > 1:
        out.print(f"[dim]{jobs} runs trained at once: their ms/step and times include the contention "
                  "between them; compare them only with each other.[/dim]")
    if not finished:
        out.print(f"[yellow]interrupted[/yellow]: the same command continues the comparison in {folder}")
        raise typer.Exit(130)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _check_reporting(threshold: float, fmt: str) -> None:
    from grokrun.plot import FORMATS

    if not 0 < threshold <= 1:
        fail(f"--threshold must be in (0, 1], got {threshold}")
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def _variant_lines(variants) -> str:
    from grokrun.config import to_dict
    from grokrun.plot import describe_filter

    return "Variants: " + "; ".join(
        f"{v.name} = {describe_filter(to_dict(v.config))} · {v.config.train.max_steps:,} steps" for v in variants)


def _tabulate_existing(paths: list[Path], out_dir: Optional[Path], threshold: float, fmt: str) -> None:
    from grokrun.results import group_variants, is_run_dir, load_runs

    runs, problems = load_runs(paths)
    for problem in problems:
        warn(problem)
    if not runs:
        fail(f"no run directories in {', '.join(map(str, paths))}")
    tasks = sorted({str(r.config.get("task")) for r in runs})
    if len(tasks) > 1:
        fail(f"the runs are of several tasks ({', '.join(tasks)}); compare the runs of one task")
    variants, repeats = group_variants(runs)
    for problem in repeats:
        warn(problem)
    folder = out_dir or (paths[0] if len(paths) == 1 and not is_run_dir(paths[0]) else None)
    _report_table(variants, folder, threshold, fmt)
    if folder is None:
        out.print("(not saved: give --out DIR to write comparison.md, comparison.csv and the overlay plot)")


def _report_table(variants, folder: Optional[Path], threshold: float, fmt: str, details: str = "") -> None:
    """Print the table; with a folder, also write comparison.md, comparison.csv and the overlay plot."""
    from grokrun.plot import describe_task, plot_overlay
    from grokrun.table import render_rich, tabulate, write_csv, write_markdown

    rows = tabulate(variants, threshold)
    title = f"{describe_task(variants[0][1][0].config)} · threshold {threshold:g} val acc"
    out.print(render_rich(rows, threshold, title))
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_markdown(rows, folder / "comparison.md", threshold, title, details)
    write_csv(rows, folder / "comparison.csv", threshold)
    figure = plot_overlay(variants, folder / f"comparison.{fmt}", threshold)
    out.print(f"wrote {folder / 'comparison.md'}, comparison.csv and {figure.name}")


@app.command()
def plot(
    path: Annotated[Path, typer.Argument(help="A run directory, or a folder searched for them.", show_default=False)],
    threshold: ThresholdOption = 0.95,
    fmt: FormatOption = "png",
) -> None:
    """Draw every run under PATH: accuracy and loss curves per run, and an overlay of the variants.

    Per run: accuracy.png and loss.png in its directory. For the runs found together: comparison.png in PATH,
    each variant's median curve with its min–max band across seeds.
    """
    _check_reporting(threshold, fmt)
    if not path.is_dir():
        fail(f"no such folder: {path}")
    from grokrun.plot import plot_path

    report = plot_path(path, fmt, threshold)
    for problem in report.warnings:
        warn(problem)
    if not report.runs:
        fail(f"no run directories in {path}")
    out.print(f"wrote {len(report.figures)} figures for {report.runs} runs"
              + "".join(f"; overlay {p}" for p in report.overlays))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def main() -> None:
    app()

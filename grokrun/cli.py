"""grokrun's command line: thin front-ends over config.resolve, engine.train_runs, compare, sweep, plot, analyze.

    grokrun train --task modular --filter ema
    grokrun train --plugin my_plugin.py --task majority  # a researcher's own task, filter, loss or optimizer

Every config field is a flag, generated (grokrun.flags) from the config dataclasses, the task modules' options
and the filters' settings (their docstrings are the help). The app is built for the registries as they are
once the plugins named on the command line (--plugin, or a --config file's plugins) are loaded, so a plugin's
settings are flags too (``app_for(argv)``). torch is imported inside the command bodies that train, so --help,
plot and tabulating runs are instant.
"""

import functools
import inspect
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from grokrun import plugins
from grokrun.cli_kit import COMMANDS, EXIT_CODES, check_reporting, command, err, fail, out, warn
from grokrun.config import parse_seeds, resolve
from grokrun.errors import UserError
from grokrun.flags import flags, typer_parameters
from grokrun.launch import plugins_named
from grokrun.report import set_command
from grokrun.options import (CompareFilters, CompareFormat, CompareJobs, CompareLrMatched, CompareNoBatch,
                             CompareOut, CompareSeeds, CompareThreshold, ConfigOption, NoBatchOption, PathsArgument,
                             PluginOption, QuietOption, ResumeOption, SeedsOption,
                             SweepAddress, SweepBackend, SweepCpus, SweepFormat, SweepGpus, SweepGridArgument,
                             SweepJobs, SweepNoBatch, SweepOut, SweepSeeds, SweepThreshold)

def build_app(error: str | None = None) -> typer.Typer:
    """The app for the registries as they are now (built-ins, installed entry points, plugins loaded); with
    ``error`` (a plugin that could not be loaded), one whose every command says it, exit 2."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                      help="Reproducible grokking experiments with Grokfast gradient filters.")

    def _main() -> None:
        """Reproducible grokking experiments with Grokfast gradient filters."""
        if error is not None:
            fail(error)

    app.callback()(_main)
    for func, how in COMMANDS:
        wrapper = functools.wraps(func)(lambda *args, _f=func, **kwargs: _f(*args, **kwargs))
        if how["config_flags"]:
            sig = inspect.signature(func, eval_str=True)
            own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
            extra = [p for p in typer_parameters(how["text"]) if p.name not in how["exclude"]]
            wrapper.__signature__ = sig.replace(parameters=[*own, *extra])
        app.command()(wrapper)
    return app


_apps: dict[int, typer.Typer] = {}  # plugins.generation -> the app built for it


def app_for(argv: list[str]) -> typer.Typer:
    """The app that parses ``argv``: its plugins loaded first, so their flags and names exist."""
    set_command(argv)  # (the title of the sweep and comparison folders it makes)
    try:
        plugins.load(plugins_named(argv))
    except UserError as e:
        return build_app(error=str(e))
    if plugins.generation not in _apps:
        _apps.clear()
        _apps[plugins.generation] = build_app()
    return _apps[plugins.generation]


def main() -> None:
    import sys

    app_for(sys.argv[1:])()


def _flags_given(values: dict[str, Any]) -> list[str]:
    """The config flags given on the command line, as typed (--max-steps)."""
    return [f"--{name.replace('_', '-')}" for name, value in values.items() if value is not None]


def overrides_from(values: dict[str, Any], plugin: list[Path] | None = None) -> dict[str, Any]:
    keys = {f.name.replace("-", "_"): f.key for f in flags()}
    overrides = {keys[name]: value for name, value in values.items() if value is not None}
    if plugin:
        overrides["plugins"] = [str(p) for p in plugin]
    return overrides


@command()
def train(config: ConfigOption = None, resume: ResumeOption = None, seeds: SeedsOption = None,
          no_batch: NoBatchOption = False, quiet: QuietOption = False, plugin: PluginOption = None,
          **values: Any) -> None:
    """Train one run and write its run directory (config.json, metrics.csv, summary.json); or, with [b]--seeds[/b],
    several seeds at once.

    [b]--filter NAME[/b] applies the task's published settings for that filter (configs/<task>_<filter>.toml), or
    the filter's own defaults where none were published; any flag given overrides them. With [b]--config[/b]
    the file replaces the preset. The defaults shown are the code's; a task's own
    (configs/<task>_baseline.toml) replace them.
    """
    from grokrun.engine import StoppedAtOnce, train_runs
    from grokrun.launch import (batched, forget_asked, is_run, new_runs, nothing_to_resume, print_headline,
                                print_headlines, record_asked, refresh_sweep_outputs, resumable)

    results: list[tuple[Path, dict[str, Any]]] = []
    asked = None  # a folder of seeds' record of them, undone if none begins (launch.record_asked)
    try:
        if resume is not None:
            given = (["--config"] * (config is not None) + ["--seeds"] * (seeds is not None)
                     + ["--plugin"] * bool(plugin) + _flags_given(values))
            if given:
                raise UserError(f"--resume continues a run as it was configured; drop {given[0]}")
            runs, ended = resumable(resume, warn)
            if not runs:
                out.print(escape(nothing_to_resume(resume, ended)))
                raise typer.Exit(0)
        else:
            if seeds is not None and values.get("seed") is not None:
                raise UserError("give --seed N for one run or --seeds for several, not both")
            runs = [(cfg, None) for cfg in new_runs(resolve(config, overrides_from(values, plugin)), seeds)]
            asked = record_asked([cfg for cfg, _ in runs], batch=not no_batch) if seeds is not None else None
        train_runs(runs, batch=not no_batch and (resume is None or batched(resume)), quiet=quiet, console=out,
                   report=lambda run_dir, summary: results.append((run_dir, summary)))
    except UserError as e:
        forget_asked(asked)
        fail(str(e))
    except StoppedAtOnce as e:
        what = ("has no summary", "its last checkpoint") if is_run(e.resume) else \
            ("holds runs without a summary", "their last checkpoints")
        err.print("[yellow]stopped at once[/yellow] " + escape(
            f"(a second interrupt): {e.resume} {what[0]}; grokrun train --resume {e.resume} continues from {what[1]}"))
        raise typer.Exit(130)
    except KeyboardInterrupt:  # before training began (loading data, building the model)
        forget_asked(asked)
        err.print("[yellow]interrupted[/yellow] before training began")
        raise typer.Exit(130)
    if len(results) == 1 and (seeds is None and (resume is None or is_run(resume))):
        print_headline(out, *results[0])
    else:
        print_headlines(out, results, resume or results[0][0].parent)
    if resume is not None:
        refresh_sweep_outputs(out, {Path(run_dir).parent for run_dir, _ in results})
    raise typer.Exit(max(EXIT_CODES[s["status"]] for _, s in results))


# --- compare, sweep, plot, analyze -----------------------------------------------------------------------

TRAINING_ONLY = ("--filter", "--seeds", "--jobs", "--no-batch", "--lr-matched", "--plugin")


@command(exclude=("filter", "seed", "out", "name"))
def compare(
    paths: PathsArgument = None,
    filters: CompareFilters = None,
    seeds: CompareSeeds = None,
    no_batch: CompareNoBatch = False,
    lr_matched: CompareLrMatched = False,
    jobs: CompareJobs = 1,
    out_dir: CompareOut = None,
    threshold: CompareThreshold = 0.95,
    fmt: CompareFormat = "png",
    quiet: QuietOption = False,
    plugin: PluginOption = None,
    **values: Any,
) -> None:
    """Train variants on the same seeds, then write the comparison table and overlay plot.

    [b]grokrun compare --task modular --filter ema[/b] trains the published baseline and EMA runs on seeds 0,1,2;
    flags such as [b]--max-steps[/b] apply to every variant. Runs already complete in the output folder are
    reused, so running the same command again trains nothing. Given run directories, it only tabulates them.
    """
    check_reporting(threshold, fmt)
    from grokrun import compare as cmp

    overrides = overrides_from(values, plugin)
    try:
        if out_dir == "":
            raise UserError("--out must name a folder (it is empty)")
        folder = None if out_dir is None else Path(out_dir)
        if paths and all(p.is_dir() for p in paths):
            given = ([name for name, v in zip(TRAINING_ONLY, (filters, seeds, jobs != 1, no_batch, lr_matched, plugin))
                      if v] + _flags_given(values))
            if given:
                raise UserError(f"{given[0]} applies to training; run directories are tabulated as they are "
                                "(give config files or --task/--filter to train)")
            cmp.tabulate_existing(paths, folder, threshold, fmt, out, warn)
            return
        seed_list = parse_seeds("0,1,2" if seeds is None else seeds)
        finished = cmp.compare(cmp.variants(paths or [], filters or [], overrides, lr_matched), seed_list,
                               jobs, folder, threshold, fmt, quiet, out, err, batch=not no_batch)
    except UserError as e:
        fail(str(e))
    if not finished:
        raise typer.Exit(130)


@command(exclude=("seed", "out", "name"), text=True)
def sweep(
    grid_file: SweepGridArgument = None,
    seeds: SweepSeeds = None,
    threshold: SweepThreshold = None,
    jobs: SweepJobs = 1,
    no_batch: SweepNoBatch = False,
    backend: SweepBackend = "local",
    address: SweepAddress = None,
    cpus_per_run: SweepCpus = None,
    gpus_per_run: SweepGpus = 0.0,
    out_dir: SweepOut = None,
    fmt: SweepFormat = "png",
    quiet: QuietOption = False,
    plugin: PluginOption = None,
    **values: Any,
) -> None:
    """Train a grid of runs: every combination of the swept settings, times the seeds; then sweep.csv, figures
    and report.html.

    Any flag takes several values, a comma list or an inclusive range lo:hi:step:
    [b]grokrun sweep --task modular --op add,div --train-frac 0.2:0.6:0.1 --filter none,ema --seeds 0-2
    --threshold 0.99[/b]. Each run is an ordinary run directory, named after its point. Running the same command
    again reuses complete runs and resumes interrupted ones.
    """
    from grokrun import sweep as sw

    try:
        if out_dir == "":
            raise UserError("--out must name a folder (it is empty)")
        if threshold is not None and not 0 < threshold <= 1:
            raise UserError(f"--threshold must be in (0, 1], got {threshold}")
        if fmt not in ("png", "svg", "pdf"):
            raise UserError(f"unknown format {fmt!r}; choose one of: png, svg, pdf")
        grid = sw.grid_from(grid_file, values, None if seeds is None else parse_seeds(seeds), threshold,
                            [str(p) for p in plugin or []])
        finished = sw.sweep(grid, sw.Backend(backend, jobs, address, cpus_per_run, gpus_per_run),
                            None if out_dir is None else Path(out_dir), fmt, quiet, out, batch=not no_batch)
    except UserError as e:
        fail(str(e))
    if not finished:
        raise typer.Exit(130)


from grokrun import cli_read  # noqa: E402,F401 (plot, analyze, export: registered after train, compare, sweep)

app = build_app()  # the built-in commands and flags; main() and app_for() build one with the plugins named
_apps[plugins.generation] = app  # (so a command line without plugins reuses it rather than building it again)

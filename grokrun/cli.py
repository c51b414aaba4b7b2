"""grokrun's command line: thin front-ends over config.resolve, engine.train, compare and plot.

    grokrun train --task modular --filter ema

Every config field is a flag, generated once (grokrun.flags) from the config dataclasses and the task
modules' options (their docstrings are the help). torch is imported inside the command bodies that
train, so --help, plot and tabulating runs are instant.
"""

import inspect
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from grokrun.config import parse_seeds, resolve
from grokrun.errors import UserError
from grokrun.filters import FILTERS
from grokrun.flags import flags

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
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _flag_parameters(text: bool = False) -> tuple[list[inspect.Parameter], dict[str, str]]:
    """One keyword parameter per config field; None means 'not given', so presets and files show through. With
    ``text``, every flag but the on/off ones takes text (a sweep's lists and ranges)."""
    params, keys = [], {}
    for flag in flags():
        decl = f"--{flag.name}/--no-{flag.name}" if flag.type is bool else f"--{flag.name}"
        help = escape(flag.help)
        if flag.default is not None:
            help += f" [dim]\\[default: {flag.default}][/dim]"
        option = typer.Option(decl, help=help, rich_help_panel=flag.panel, show_default=False,
                              metavar="" if flag.type is bool else None)  # an on/off flag takes no value
        name = flag.name.replace("-", "_")
        kind = str if text and flag.type is not bool else flag.type
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[kind], option]))
        keys[name] = flag.key
    return params, keys


FLAG_PARAMETERS, FLAG_KEYS = _flag_parameters()
TEXT_FLAG_PARAMETERS, _ = _flag_parameters(text=True)


def with_config_flags(exclude: tuple[str, ...] = (), text: bool = False):
    """Give a command every config flag but ``exclude``: its ``**values`` receives them by Python name (as text,
    with ``text``: a sweep's lists and ranges)."""
    def decorate(func):
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [p for p in (TEXT_FLAG_PARAMETERS if text else FLAG_PARAMETERS) if p.name not in exclude]
        func.__signature__ = sig.replace(parameters=[*own, *extra])
        return func
    return decorate


def _flags_given(values: dict[str, Any]) -> list[str]:
    """The config flags given on the command line, as typed (--max-steps)."""
    return [f"--{name.replace('_', '-')}" for name, value in values.items() if value is not None]


def overrides_from(values: dict[str, Any]) -> dict[str, Any]:
    return {FLAG_KEYS[name]: value for name, value in values.items() if value is not None}


ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML preset (configs/*.toml) or a run's config.json; flags override it (a --filter other "
    "than the file's brings that filter's preset in place of the file's filter settings).",
    rich_help_panel="Run", show_default=False)]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or progress lines.",
                                           rich_help_panel="Run", metavar="")]
ResumeOption = Annotated[Optional[Path], typer.Option(
    "--resume", help="Continue an interrupted run directory from its checkpoint, to its original budget; given a "
    "folder of run directories (the seeds of a --seeds run), continue each unfinished one.",
    rich_help_panel="Run", show_default=False)]
SeedsOption = Annotated[Optional[str], typer.Option(
    "--seeds", help="Train these seeds (0-15, 0,1,2) together in one process, as one stacked model where the task "
    "allows, each exactly as --seed N alone; one run directory each, in one folder.",
    rich_help_panel="Run", show_default=False)]
NoBatchOption = Annotated[bool, typer.Option(
    "--no-batch", help="Train several seeds one after another instead of as one stacked model.",
    rich_help_panel="Run", metavar="")]


@app.command()
@with_config_flags()
def train(config: ConfigOption = None, resume: ResumeOption = None, seeds: SeedsOption = None,
          no_batch: NoBatchOption = False, quiet: QuietOption = False, **values: Any) -> None:
    """Train one run and write its run directory (config.json, metrics.csv, summary.json); or, with [b]--seeds[/b],
    several seeds at once.

    [b]--filter NAME[/b] applies the task's published settings for that filter (configs/<task>_<filter>.toml), or
    the filter's own defaults where none were published; any flag given overrides them. With [b]--config[/b]
    the file replaces the preset. The defaults shown are the code's; a task's own
    (configs/<task>_baseline.toml) replace them.
    """
    from grokrun.engine import StoppedAtOnce, train_runs

    results: list[tuple[Path, dict[str, Any]]] = []
    try:
        if resume is not None:
            runs = _resumable(resume, config, values, seeds)
        else:
            runs = [(cfg, None) for cfg in _new_runs(config, values, seeds)]
        train_runs(runs, batch=not no_batch, quiet=quiet, console=out,
                   report=lambda run_dir, summary: results.append((run_dir, summary)))
    except UserError as e:
        fail(str(e))
    except StoppedAtOnce as e:
        what = ("has no summary", "its last checkpoint") if _is_run(e.resume) else \
            ("holds runs without a summary", "their last checkpoints")
        err.print("[yellow]stopped at once[/yellow] " + escape(
            f"(a second interrupt): {e.resume} {what[0]}; grokrun train --resume {e.resume} continues from {what[1]}"))
        raise typer.Exit(130)
    except KeyboardInterrupt:  # before training began (loading data, building the model)
        err.print("[yellow]interrupted[/yellow] before training began")
        raise typer.Exit(130)
    if len(results) == 1 and (seeds is None and (resume is None or _is_run(resume))):
        print_headline(*results[0])
    else:
        print_headlines(results, resume or results[0][0].parent)
    raise typer.Exit(max(EXIT_CODES[s["status"]] for _, s in results))


def _is_run(path: Path) -> bool:
    """A run directory to resume (its metrics may be missing: resuming says so), rather than a folder of them."""
    from grokrun.results import CONFIG

    return (path / CONFIG).is_file()


def _new_runs(config: Optional[Path], values: dict[str, Any], seeds: Optional[str]) -> list:
    """The configs of a new run, or of one per seed with --seeds (in one folder: out/<name or
    task-filter-seedsSPEC>, a run directory seed<N> each)."""
    import dataclasses

    from grokrun.engine import format_seeds
    from grokrun.results import free_name

    cfg = resolve(config, overrides_from(values))
    if seeds is None:
        return [cfg]
    if values.get("seed") is not None:
        raise UserError("give --seed N for one run or --seeds for several, not both")
    seed_list = parse_seeds(seeds)
    folder = free_name(Path(cfg.out), cfg.name or f"{cfg.task}-{cfg.filter.name}-seeds{format_seeds(seed_list)}")
    return [dataclasses.replace(cfg, seed=s, out=str(folder), name=f"seed{s}") for s in seed_list]


def _resumable(path: Path, config: Optional[Path], values: dict[str, Any], seeds: Optional[str]) -> list:
    """(config, run directory) of each run to resume at ``path`` (a run directory, or a folder of them); exits 0
    at once if none has anything left to do."""
    import json

    from grokrun.results import CONFIG, FINAL, SUMMARY, find_runs

    given = ["--config"] * (config is not None) + ["--seeds"] * (seeds is not None) + _flags_given(values)
    if given:
        raise UserError(f"--resume continues a run as it was configured; drop {given[0]}")
    if not path.is_dir():
        raise UserError(f"--resume {path}: no such folder")
    run_dirs = [path] if _is_run(path) else find_runs(path)[0]
    if not run_dirs:
        raise UserError(f"{path} is not a run directory (it has no {CONFIG}) and holds none")
    todo, ended = [], []
    for run_dir in run_dirs:
        try:
            summary = json.loads((run_dir / SUMMARY).read_text())
        except (OSError, ValueError):
            summary = {}
        if summary.get("status") in FINAL:
            ended.append((run_dir, summary))
        else:
            todo.append((resolve(run_dir / CONFIG, {}), run_dir))
    if not todo:
        if len(ended) == 1:
            run_dir, summary = ended[0]
            out.print(escape(f"{run_dir} has already ended ({summary['status'].replace('_', ' ')} after "
                             f"{summary.get('steps', 0):,} steps); nothing to resume"))
        else:
            out.print(escape(f"the {len(ended)} runs in {path} have all ended; nothing to resume"))
        raise typer.Exit(0)
    return todo


def print_headlines(results: list[tuple[Path, dict[str, Any]]], folder: Path) -> None:
    """One line per seed trained at once, then what they cost together and how to continue any interrupted."""
    from grokrun.results import read_run
    from grokrun.table import headline

    for run_dir, s in results:
        run = read_run(run_dir)
        threshold = run.config.get("train", {}).get("stop_at_acc") or 0.95
        out.print(escape(f"{run_dir}: {headline(run, threshold)}"))
    together = max((s.get("trained_with", 1) for _, s in results), default=1)
    if together > 1:
        wall = max(s["wall_s"] for _, s in results)
        out.print(escape(f"{together} seeds trained together: {wall:.1f} s of training for all of them"))
    if any(s["status"] == "interrupted" for _, s in results):
        out.print(escape(f"checkpoints written; continue with: grokrun train --resume {folder}"))


def print_headline(run_dir: Path, s: dict[str, Any]) -> None:
    """Where the run went, how it ended, and what it found: steps and time to 95% val acc (or the lowest
    validation loss), ms/step, peak memory and device."""
    from grokrun.results import read_run
    from grokrun.table import count, headline

    run = read_run(run_dir)
    status = {"completed": "completed", "stopped_at_target": "stopped at target",
              "interrupted": "[yellow]interrupted[/yellow]", "diverged": "[red]diverged[/red]"}[s["status"]]
    out.print(f"run: {escape(str(run_dir))} ({status} after {count(s['steps'], 'step')})")
    if s["status"] == "diverged":
        out.print(f"[red]diverged at step {s['diverged_at']:,}[/red]: the loss or a gradient became non-finite; "
                  "try a smaller --lamb or --lr")
    if s["status"] == "interrupted":
        out.print(f"checkpoint written at step {s['steps']:,}; continue with: grokrun train --resume "
                  f"{escape(str(run_dir))}")
    threshold = run.config.get("train", {}).get("stop_at_acc") or 0.95  # the run's own target, where it has one
    out.print(escape(headline(run, threshold, status=False, machine=True)))


# --- compare and plot ----------------------------------------------------------------------------------

PathsArgument = Annotated[Optional[list[Path]], typer.Argument(
    help="Config files, one variant each (the first is the baseline); or run directories and folders of them, "
         "tabulated as they are, without training.", show_default=False)]
def _threshold_option(panel: str):
    return Annotated[float, typer.Option(help="Validation accuracy whose first crossing the table and plots report.",
                                         rich_help_panel=panel)]


def _format_option(panel: str):
    return Annotated[str, typer.Option("--format", help="Figure format: png | svg | pdf.", rich_help_panel=panel)]


CompareThreshold, CompareFormat = _threshold_option("Compare"), _format_option("Compare")
PlotThreshold, PlotFormat = _threshold_option("Plot"), _format_option("Plot")


TRAINING_ONLY = ("--filter", "--seeds", "--jobs", "--no-batch", "--lr-matched")


@app.command()
@with_config_flags(exclude=("filter", "seed", "out", "name"))
def compare(
    paths: PathsArgument = None,
    filters: Annotated[Optional[list[str]], typer.Option(
        "--filter", metavar="NAME", help="Filter to compare with the baseline (none), with the task's published "
        f"settings (or the filter's own defaults where none were published); repeat for more. One of: "
        f"{', '.join(FILTERS)}. "
        "[dim]\\[default: every published filter of the task][/dim]",
        rich_help_panel="Compare", show_default=False)] = None,
    seeds: Annotated[Optional[str], typer.Option(
        help="Seeds of each variant: 0,1,2 or 0-15. Trained together, as one stacked model per variant, where the "
        "task allows. [dim]\\[default: 0,1,2][/dim]", rich_help_panel="Compare", show_default=False)] = None,
    no_batch: Annotated[bool, typer.Option(
        "--no-batch", help="Train each variant's seeds one after another instead of as one stacked model.",
        rich_help_panel="Compare", metavar="")] = False,
    lr_matched: Annotated[bool, typer.Option(
        "--lr-matched", help="Also train baselines whose learning rate is multiplied by 1 + lamb of each filter "
        "variant (the filtered gradient is up to that much larger): a fair baseline.", rich_help_panel="Compare",
        metavar="")] = False,
    jobs: Annotated[int, typer.Option(help="Runs trained at once, in parallel processes.",
                                      rich_help_panel="Compare")] = 1,
    out_dir: Annotated[Optional[str], typer.Option(
        "--out", help="Output folder. [dim]\\[default: the newest results/compare-<task>-* with the same variants, "
        "else a new results/compare-<task>-<time>][/dim]", rich_help_panel="Compare", show_default=False)] = None,
    threshold: CompareThreshold = 0.95,
    fmt: CompareFormat = "png",
    quiet: QuietOption = False,
    **values: Any,
) -> None:
    """Train variants on the same seeds, then write the comparison table and overlay plot.

    [b]grokrun compare --task modular --filter ema[/b] trains the published baseline and EMA runs on seeds 0,1,2;
    flags such as [b]--max-steps[/b] apply to every variant. Runs already complete in the output folder are
    reused, so running the same command again trains nothing. Given run directories, it only tabulates them.
    """
    _check_reporting(threshold, fmt)
    from grokrun import compare as cmp

    overrides = overrides_from(values)
    try:
        if out_dir == "":
            raise UserError("--out must name a folder (it is empty)")
        folder = None if out_dir is None else Path(out_dir)
        if paths and all(p.is_dir() for p in paths):
            given = ([name for name, v in zip(TRAINING_ONLY, (filters, seeds, jobs != 1, no_batch, lr_matched)) if v]
                     + _flags_given(values))
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


def _check_reporting(threshold: float, fmt: str) -> None:
    from grokrun.plot import FORMATS

    if not 0 < threshold <= 1:
        fail(f"--threshold must be in (0, 1], got {threshold}")
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


@app.command()
@with_config_flags(exclude=("seed", "out", "name"), text=True)
def sweep(
    grid_file: Annotated[Optional[Path], typer.Argument(
        help="A TOML grid (configs/sweeps/*.toml): seeds, threshold, \\[fixed] settings and \\[grid] axes; flags add "
        "axes or override it.", show_default=False)] = None,
    seeds: Annotated[Optional[str], typer.Option(
        help="Seeds of each point: 0,1,2 or 0-2; a point's seeds train as one stacked model where the task allows. "
        "[dim]\\[default: the grid file's, else 0][/dim]", rich_help_panel="Sweep", show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="Validation accuracy whose first crossing the table and figures report. [dim]\\[default: the grid "
        "file's, else 0.99][/dim]", rich_help_panel="Sweep", show_default=False)] = None,
    jobs: Annotated[int, typer.Option(help="Points trained at once, in parallel processes (--backend local).",
                                      rich_help_panel="Sweep")] = 1,
    no_batch: Annotated[bool, typer.Option(
        "--no-batch", help="Train each point's seeds one after another instead of as one stacked model.",
        rich_help_panel="Sweep", metavar="")] = False,
    backend: Annotated[str, typer.Option(
        help="local (this machine's processes) | ray (Ray tasks: pip install 'grokrun[ray]').",
        rich_help_panel="Sweep")] = "local",
    address: Annotated[Optional[str], typer.Option(
        help="Ray cluster to use: auto (the one this machine belongs to) or HOST:PORT. [dim]\\[default: a local Ray "
        "instance, started for the sweep][/dim]", rich_help_panel="Sweep", show_default=False)] = None,
    cpus_per_run: Annotated[float, typer.Option(help="CPUs per Ray task (a point's seeds).",
                                                rich_help_panel="Sweep")] = 1.0,
    gpus_per_run: Annotated[float, typer.Option(help="GPUs per Ray task: 0.25 packs four on a GPU.",
                                                rich_help_panel="Sweep")] = 0.0,
    out_dir: Annotated[Optional[str], typer.Option(
        "--out", help="Output folder. [dim]\\[default: the newest results/sweep-<task>-* of the same grid, else a "
        "new results/sweep-<task>-<time>][/dim]", rich_help_panel="Sweep", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png | svg | pdf.",
                                     rich_help_panel="Sweep")] = "png",
    quiet: QuietOption = False,
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
    from grokrun.flags import flags as all_flags

    try:
        if out_dir == "":
            raise UserError("--out must name a folder (it is empty)")
        if threshold is not None and not 0 < threshold <= 1:
            raise UserError(f"--threshold must be in (0, 1], got {threshold}")
        if fmt not in ("png", "svg", "pdf"):
            raise UserError(f"unknown format {fmt!r}; choose one of: png, svg, pdf")
        by_key = {f.key: f for f in all_flags()}
        grid = sw.read_grid_file(grid_file, by_key) if grid_file is not None else sw.Grid({}, [])
        by_name = {f.name: f for f in all_flags()}
        for name, text in values.items():
            if text is None:
                continue
            flag = by_name[name.replace("_", "-")]
            key = FLAG_KEYS[name]
            grid.axes = [a for a in grid.axes if a.key != key]  # the command line wins over the file
            grid.fixed.pop(key, None)
            parsed = [text] if flag.type is bool else sw.parse_values(text, flag.type, flag.name)
            if len(parsed) == 1:
                grid.fixed[key] = parsed[0]
            else:
                grid.axes.append(sw.Axis(key, flag.name, parsed))
        if seeds is not None:
            grid.seeds = parse_seeds(seeds)
        if threshold is not None:
            grid.threshold = threshold
        finished = sw.sweep(grid, sw.Backend(backend, jobs, address, cpus_per_run, gpus_per_run),
                            None if out_dir is None else Path(out_dir), fmt, quiet, out, batch=not no_batch)
    except UserError as e:
        fail(str(e))
    if not finished:
        raise typer.Exit(130)


@app.command()
def plot(
    path: Annotated[Path, typer.Argument(help="A run directory, or a folder searched for them.", show_default=False)],
    threshold: PlotThreshold = 0.95,
    fmt: PlotFormat = "png",
) -> None:
    """Draw every run under PATH: accuracy, loss and weight-norm curves per run, and an overlay of the variants.

    Per run: accuracy.png (tasks with accuracy), loss.png and weight_norm.png in its directory. For the runs found
    together: comparison.png in PATH, each variant's median curve with its min–max band across seeds.
    """
    _check_reporting(threshold, fmt)
    if not path.is_dir():
        fail(f"no such folder: {path}")
    from grokrun.plot import plot_path

    report = plot_path(path, fmt, threshold)
    from grokrun.sweep import read_manifest, write_outputs

    if read_manifest(path) is not None:  # a sweep's folder: its table and figures
        try:
            report.overlays += [p for p in write_outputs(path, fmt) if p.suffix == f".{fmt}"]
        except UserError as e:
            report.warnings.append(str(e))
    for problem in report.warnings:
        warn(problem)
    if not report.runs:
        fail(f"nothing to draw in {path}" + (" (see the warnings above)" if report.warnings else
                                             ": it holds no run directories"))
    if not report.figures:
        fail(f"no figure could be written for the {report.runs} runs in {path} (see the warnings above)")
    out.print(escape(f"wrote {len(report.figures)} figures for {report.runs} run{'s' * (report.runs != 1)}"
                     + "".join(f"; overlay {p}" for p in report.overlays)))


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Run directories, or folders searched for them.",
                                                show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf (the animation is a GIF).")]
    = "png",
) -> None:
    """What a modular-arithmetic run learned, from its weight snapshots (train --snapshots, on by default).

    Per run, in its directory: embedding_pca.png and embedding_pca.gif (the residues' embeddings on their
    principal components, joined in the order of a key frequency: the circles), fourier.png and fourier.json
    (the embedding's norm per Fourier frequency, the key frequencies and their share), progress.png and
    progress.csv (train/test loss, restricted and excluded loss, Fourier sparsity and weight norm over the
    snapshots, with the phase marks). S5 runs get the PCA figures only.
    """
    from grokrun.plot import FORMATS

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    from grokrun.analyze import analyze_paths

    try:
        results = analyze_paths(paths, fmt)
    except UserError as e:
        fail(str(e))
    for result in results:
        out.print(escape(result.summary()))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def main() -> None:
    app()

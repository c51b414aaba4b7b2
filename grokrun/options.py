"""The command line's options that are not config fields, each defined once (the config fields' flags are made
by grokrun.flags). Read by grokrun.cli.

    def train(config: ConfigOption = None, quiet: QuietOption = False, ...): ...
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

from grokrun.filters import FILTERS

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


PluginOption = Annotated[Optional[list[Path]], typer.Option(
    "--plugin", help="A Python file of your own tasks, filters, losses or optimizers (docs/extending.md); repeat "
    "for more. Recorded in config.json, so reruns, resumes and sweep workers load it again.",
    rich_help_panel="Run", show_default=False)]


# --- compare

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
CompareFilters = Annotated[Optional[list[str]], typer.Option(
        "--filter", metavar="NAME", help="Filter to compare with the baseline (none), with the task's published "
        f"settings (or the filter's own defaults where none were published); repeat for more. One of: "
        f"{', '.join(FILTERS)}. "
        "[dim]\\[default: every published filter of the task][/dim]",
        rich_help_panel="Compare", show_default=False)]
CompareSeeds = Annotated[Optional[str], typer.Option(
        help="Seeds of each variant: 0,1,2 or 0-15. Trained together, as one stacked model per variant, where the "
        "task allows. [dim]\\[default: 0,1,2][/dim]", rich_help_panel="Compare", show_default=False)]
CompareNoBatch = Annotated[bool, typer.Option(
        "--no-batch", help="Train each variant's seeds one after another instead of as one stacked model.",
        rich_help_panel="Compare", metavar="")]
CompareLrMatched = Annotated[bool, typer.Option(
        "--lr-matched", help="Also train baselines whose learning rate is multiplied by 1 + lamb of each filter "
        "variant (the filtered gradient is up to that much larger): a fair baseline.", rich_help_panel="Compare",
        metavar="")]
CompareJobs = Annotated[int, typer.Option(help="Runs trained at once, in parallel processes.",
                                      rich_help_panel="Compare")]
CompareOut = Annotated[Optional[str], typer.Option(
        "--out", help="Output folder. [dim]\\[default: the newest results/compare-<task>-* with the same variants, "
        "else a new results/compare-<task>-<time>][/dim]", rich_help_panel="Compare", show_default=False)]


# --- sweep

SweepGridArgument = Annotated[Optional[Path], typer.Argument(
        help="A TOML grid (configs/sweeps/*.toml): seeds, threshold, \\[fixed] settings and \\[grid] axes; flags add "
        "axes or override it.", show_default=False)]
SweepSeeds = Annotated[Optional[str], typer.Option(
        help="Seeds of each point: 0,1,2 or 0-2; a point's seeds train as one stacked model where the task allows. "
        "[dim]\\[default: the grid file's, else 0][/dim]", rich_help_panel="Sweep", show_default=False)]
SweepThreshold = Annotated[Optional[float], typer.Option(
        help="Validation accuracy whose first crossing the table and figures report. [dim]\\[default: the grid "
        "file's, else 0.99][/dim]", rich_help_panel="Sweep", show_default=False)]
SweepJobs = Annotated[int, typer.Option(help="Points trained at once, in parallel processes (--backend local).",
                                      rich_help_panel="Sweep")]
SweepNoBatch = Annotated[bool, typer.Option(
        "--no-batch", help="Train each point's seeds one after another instead of as one stacked model.",
        rich_help_panel="Sweep", metavar="")]
SweepBackend = Annotated[str, typer.Option(
        help="local (this machine's processes) | ray (Ray tasks: pip install 'grokrun[ray]').",
        rich_help_panel="Sweep")]
SweepAddress = Annotated[Optional[str], typer.Option(
        help="Ray cluster to use: auto (the one this machine belongs to) or HOST:PORT. [dim]\\[default: a local Ray "
        "instance, started for the sweep][/dim]", rich_help_panel="Sweep", show_default=False)]
SweepCpus = Annotated[Optional[float], typer.Option(
        help="CPUs per Ray task (a point's seeds). [dim]\\[default: the runs' --threads][/dim]",
        rich_help_panel="Sweep", show_default=False)]
SweepGpus = Annotated[float, typer.Option(help="GPUs per Ray task: 0.25 packs four on a GPU.",
                                                rich_help_panel="Sweep")]
SweepOut = Annotated[Optional[str], typer.Option(
        "--out", help="Output folder. [dim]\\[default: the newest results/sweep-<task>-* of the same grid, else a "
        "new results/sweep-<task>-<time>][/dim]", rich_help_panel="Sweep", show_default=False)]
SweepFormat = _format_option("Sweep")

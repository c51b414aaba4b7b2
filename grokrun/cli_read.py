"""The commands that read run directories and train nothing: plot, analyze, export. torch is imported only
inside analyze and export.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from grokrun.cli_kit import check_reporting, command, fail, out, warn
from grokrun.errors import UserError
from grokrun.llc import LLCSettings
from grokrun.options import PlotFormat, PlotThreshold


@command(config_flags=False)
def plot(
    path: Annotated[Path, typer.Argument(help="A run directory, or a folder searched for them.", show_default=False)],
    threshold: PlotThreshold = 0.95,
    fmt: PlotFormat = "png",
) -> None:
    """Draw every run under PATH: accuracy, loss and weight-norm curves per run, and an overlay of the variants.

    Per run: accuracy.png (tasks with accuracy), loss.png and weight_norm.png in its directory. For the runs found
    together: comparison.png in PATH, each variant's median curve with its min–max band across seeds.
    """
    check_reporting(threshold, fmt)
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


@command(config_flags=False)
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Run directories, or folders searched for them.",
                                                show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf (the animation is a GIF).")]
    = "png",
    llc: Annotated[bool, typer.Option("--llc", help="Also estimate the local learning coefficient at the "
                                      "snapshots (devinterp's SGLD; pip install 'grokrun[interp]').")] = False,
    llc_lr: Annotated[float, typer.Option(help="SGLD step size ε.")] = LLCSettings.lr,
    llc_nbeta: Annotated[float, typer.Option(help="SGLD inverse temperature nβ.")] = LLCSettings.nbeta,
    llc_localization: Annotated[float, typer.Option(help="SGLD pull γ toward the snapshot's weights.")]
    = LLCSettings.localization,
    llc_chains: Annotated[int, typer.Option(help="SGLD chains per snapshot.")] = LLCSettings.chains,
    llc_draws: Annotated[int, typer.Option(help="Draws per chain.")] = LLCSettings.draws,
    llc_batch_size: Annotated[int, typer.Option(help="Training examples per SGLD step.")] = LLCSettings.batch_size,
    llc_every: Annotated[int, typer.Option(help="Estimate at every N-th snapshot (and the last).")] = 1,
    llc_seed: Annotated[int, typer.Option(help="Seed of the chains' noise and batches.")] = LLCSettings.seed,
) -> None:
    """What a modular-arithmetic run learned, from its weight snapshots (train --snapshots, on by default).

    Per run, in its directory: embedding_pca.png and embedding_pca.gif (the residues' embeddings on their
    principal components, joined in the order of a key frequency: the circles), fourier.png and fourier.json
    (the embedding's norm per Fourier frequency, the key frequencies and their share), progress.png and
    progress.csv (train/test loss, restricted and excluded loss, Fourier sparsity and weight norm over the
    snapshots, with the phase marks). S5 runs get the PCA figures only. With [b]--llc[/b], progress.csv and
    progress.png also hold the local learning coefficient (docs/analyze.md).
    """
    from grokrun.plot import FORMATS

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    from grokrun.analyze import analyze_paths

    try:
        settings = None
        if llc:
            from grokrun.llc import needs_devinterp

            needs_devinterp()
            settings = LLCSettings(llc_lr, llc_nbeta, llc_localization, llc_chains, llc_draws, llc_batch_size,
                                   seed=llc_seed)
            settings.check()
            if llc_every < 1:
                raise UserError(f"--llc-every must be >= 1, got {llc_every}")
        results = analyze_paths(paths, fmt, warn=warn, llc=settings and (settings, llc_every))
    except UserError as e:
        fail(str(e))
    for result in results:
        out.print(escape(result.summary()))


@command(config_flags=False)
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (modular, the decoder).", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="transformer-lens: a file HookedTransformer loads.")]
    = "transformer-lens",
    step: Annotated[Optional[int], typer.Option("--step", help="A snapshot's step (default: the final weights).",
                                                show_default=False)] = None,
) -> None:
    """A run's weights for another library, checked on every input of the task's table before they are written.

    [b]--to transformer-lens[/b]: RUN_DIR/transformer_lens.pt (or -step<N>.pt), HookedTransformer's config and
    state dict, for decoders HookedTransformer expresses (--block prenorm, or --no-layernorm); see docs/export.md.
    """
    from grokrun.export import TARGETS, export as write

    if to not in TARGETS:
        fail(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    try:
        path, gap = write(run_dir, step)
    except UserError as e:
        fail(str(e))
    out.print(escape(f"wrote {path}: HookedTransformer's config and state dict; its logits equal the run's to "
                     f"{gap:.1e} on every input of the table"))

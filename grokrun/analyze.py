"""What a grokking model of modular arithmetic learned: embedding circles, Fourier key frequencies, progress
measures (Nanda et al. 2023), from the weight snapshots a run saved (grokrun.snapshots).

    grokrun analyze results/modular-none-seed0      # or a folder of runs: one set of figures per run

Definitions, for a run over Z_p with embedding E (p x d: the decoder's token embeddings of the residues; the
MLP's first-layer columns for the operand a):

- Fourier norm of frequency k (1 <= k <= p // 2): the squared norm of E projected on the orthonormal pair
  cos(2 pi k x / p), sin(2 pi k x / p) over the residues x. Its share: that over the sum for every k >= 1 (the
  constant component left out).
- Key frequencies: those whose share is at least KEY_FACTOR (3) times the share each of the p // 2 frequencies
  would have in an embedding with no structure, read on the last snapshot. A random embedding of width d
  spreads its norm evenly (each share within a few tenths of uniform for d >= 64), so it has none; a
  grokked one puts most of its norm on a few.
- Fourier sparsity: the share of the key frequencies, at every snapshot (key frequencies of the last one).
- Restricted and excluded loss (x+y and x-y only, where every pair (a, b) is in the table): the logits of
  each output c, as a function of (a, b) on the p x p grid, projected on the directions cos(w_k(a +- b)),
  sin(w_k(a +- b)) of the key frequencies (restricted: that projection plus the logits' mean over the grid;
  excluded: the logits less it). Restricted loss is read on the validation split, excluded loss on the
  training split, as Nanda et al. Their code projects the MLP activations of their one-layer model and maps
  them to the logits; this projects the logits themselves, which any architecture has.
- Losses are softmax cross-entropy in float64 over the model's whole output, whatever the run trained with.
- Phase marks, read on the snapshots: memorized (training accuracy first >= 99%), test accuracy leaving chance
  (validation first >= 10%), generalized (validation first >= 99%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from grokrun.analyze_load import load_run
from grokrun.errors import UserError
from grokrun.results import write_json_atomic, write_text_atomic
from grokrun.runs import find_runs

KEY_FACTOR = 3.0
PHASES = (("memorized", "train_acc", 0.99), ("test acc ≥ 10%", "test_acc", 0.10), ("generalized", "test_acc", 0.99))
PROGRESS_COLUMNS = ("step", "train_loss", "train_acc", "test_loss", "test_acc", "restricted_loss", "excluded_loss",
                    "fourier_sparsity", "weight_norm", "llc", "llc_std", "llc_warning")
SUM_OPS = {"add": 1, "sub": -1}  # ops whose answer is a function of a + sign * b, on the whole p x p grid
PERMUTATION_OPS = ("s5", "s5conj", "s5aba")


# --- the mathematics, on tensors ----------------------------------------------------------------------

def fourier_basis(p: int) -> tuple[Tensor, list[int]]:
    """Orthonormal rows over the residues 0..p-1 (float64): the constant, then cos and sin of each frequency
    k = 1..p // 2 (sin left out where it is zero, k = p / 2), and the frequency of each row."""
    x = torch.arange(p, dtype=torch.float64)
    rows, freqs = [torch.full((p,), 1.0, dtype=torch.float64)], [0]
    for k in range(1, p // 2 + 1):
        for f in (torch.cos, torch.sin):
            v = f(2 * math.pi * k * x / p)
            if v.norm() > 1e-9:
                rows.append(v)
                freqs.append(k)
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), freqs


def frequency_norms(embedding: Tensor) -> Tensor:
    """Squared norm of the (p, d) embedding in each frequency 1..p // 2."""
    p = embedding.shape[0]
    basis, freqs = fourier_basis(p)
    per_row = (basis @ embedding.double()).pow(2).sum(1)
    out = torch.zeros(p // 2 + 1, dtype=torch.float64).index_add_(0, torch.tensor(freqs), per_row)
    return out[1:]


def key_frequencies(norms: Tensor) -> list[int]:
    """The frequencies (1-based) whose share of the norm is at least KEY_FACTOR times the uniform share."""
    share = norms / norms.sum()
    return [k + 1 for k in range(len(norms)) if share[k] >= KEY_FACTOR / len(norms)]


def key_share(norms: Tensor, keys: list[int]) -> float:
    return float(norms[[k - 1 for k in keys]].sum() / norms.sum()) if keys else 0.0


def sum_directions(p: int, keys: list[int], sign: int = 1) -> Tensor:
    """Orthonormal directions cos(w_k (a + sign b)), sin(w_k (a + sign b)) over the flattened (a, b) grid
    (row a * p + b), one pair per key frequency: (2 * len(keys), p * p), float64."""
    a = torch.arange(p, dtype=torch.float64).repeat_interleave(p)
    b = torch.arange(p, dtype=torch.float64).repeat(p)
    rows = []
    for k in keys:
        angle = 2 * math.pi * k * (a + sign * b) / p
        for v in (torch.cos(angle), torch.sin(angle)):
            if v.norm() > 1e-9:
                rows.append(v / v.norm())
    return torch.stack(rows) if rows else torch.zeros(0, p * p, dtype=torch.float64)


def restricted_logits(logits: Tensor, directions: Tensor) -> Tensor:
    """(p * p, V) grid logits kept only along ``directions`` (per output), plus their mean over the grid."""
    logits = logits.double()
    return logits.mean(0, keepdim=True) + directions.T @ (directions @ logits)


def excluded_logits(logits: Tensor, directions: Tensor) -> Tensor:
    """(p * p, V) grid logits less their part along ``directions``."""
    logits = logits.double()
    return logits - directions.T @ (directions @ logits)


def cross_entropy(logits: Tensor, y: Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(logits.double(), y))


def pca(embedding: Tensor, components: int) -> Tensor:
    """The rows of the embedding, centred, on its leading principal components: (p, components)."""
    centred = embedding.double() - embedding.double().mean(0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    return (u * s)[:, :components]


def circle_order(p: int, k: int) -> list[int]:
    """The residues in the order a frequency k puts them on its circle: by k * x mod p."""
    return sorted(range(p), key=lambda x: (k * x % p, x))


def best_frequency(coords: Tensor, candidates: list[int]) -> int:
    """The frequency, among ``candidates``, that carries most of the norm of these (p, c) coordinates."""
    norms = frequency_norms(coords)
    return max(candidates, key=lambda k: float(norms[k - 1]))


# --- a run -------------------------------------------------------------------------------------------

@dataclass
class Analysis:
    run_dir: Path
    p: int
    op: str
    steps: list[int]
    progress: list[dict[str, Any]] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)
    norms: Tensor | None = None
    phases: dict[str, int | None] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    llc_warnings: list[tuple[int, str]] = field(default_factory=list)  # (step, why its LLC is unreliable)

    def summary(self) -> str:
        parts = [str(self.run_dir)]
        if self.norms is not None:
            keys = ", ".join(map(str, self.keys)) or "none"
            parts.append(f"key frequencies {keys} ({key_share(self.norms, self.keys):.0%} of the embedding's "
                         f"Fourier norm at step {self.steps[-1]:,})")
        marks = [f"{name} at step {step:,}" if step is not None else f"{name}: not within the snapshots"
                 for name, step in self.phases.items()]
        if marks:
            parts.append("; ".join(marks))
        estimated = [r for r in self.progress if r.get("llc") is not None]
        if estimated:
            last = estimated[-1]
            parts.append(f"LLC at {len(estimated)} snapshots, {last['llc']:.3g} at step {last['step']:,}"
                         + (f"; unreliable at {len(self.llc_warnings)} (first at step {self.llc_warnings[0][0]:,}: "
                            f"{self.llc_warnings[0][1]})" if self.llc_warnings else ""))
        parts.append("wrote " + ", ".join(f.name for f in self.files))
        return " · ".join(parts)


def embedding_of(model: torch.nn.Module, symbols: int) -> Tensor:
    """The residues' embeddings (symbols, d): the decoder's token embedding, or the MLP's first-layer columns
    for the operand a (with a LoRA adapter's update added)."""
    from grokrun.models import LoRALinear, PairMLP

    if isinstance(model, PairMLP):
        first = model.first
        if isinstance(first, LoRALinear):
            weight = first.base.weight + (first.lora_b @ first.lora_a) * first.scale
        else:
            weight = first.weight
        return weight[:, :symbols].T.detach()
    return model.tok.weight[:symbols].detach()


def _logits(model: torch.nn.Module, x: Tensor, chunk: int = 4096) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def analyze_run(run_dir: Path, fmt: str = "png", loaded=None, llc=None) -> Analysis:
    """Every figure and table for one run, written into its directory (``loaded``: what load_run gave for it;
    ``llc``: (LLCSettings, every k-th snapshot) to estimate the local learning coefficient at, or None)."""
    from grokrun.tasks.modular import symbols, table

    cfg, t, steps, states = loaded or load_run(run_dir)
    op, p = cfg.modular.op, cfg.modular.p
    n = symbols(op, p)
    result = Analysis(Path(run_dir), n, op, steps)
    fourier = op not in PERMUTATION_OPS
    x_all, y_all, _ = table(op, p)
    (x_train, y_train), (x_val, y_val) = t.data["train"], t.data["val"]
    grid = op in SUM_OPS

    embeddings = []
    for state in states:
        t.model.load_state_dict(state)
        embeddings.append(embedding_of(t.model, n).double())
    if fourier:
        result.norms = frequency_norms(embeddings[-1])
        result.keys = key_frequencies(result.norms)
        directions = sum_directions(p, result.keys, SUM_OPS[op]) if grid else None
        train_index = x_train[:, 0] * p + x_train[:, 2]
        val_index = x_val[:, 0] * p + x_val[:, 2]
        for step, state, emb in zip(steps, states, embeddings):
            t.model.load_state_dict(state)
            row: dict[str, Any] = {"step": step}
            if grid:  # the table's rows are the grid, a * p + b: one pass gives both splits and the grid
                logits = _logits(t.model, x_all)
                logits_train, logits_val = logits[train_index], logits[val_index]
            else:
                logits_train, logits_val = _logits(t.model, x_train), _logits(t.model, x_val)
            row.update(train_loss=cross_entropy(logits_train, y_train),
                       train_acc=float((logits_train.argmax(1) == y_train).double().mean()),
                       test_loss=cross_entropy(logits_val, y_val),
                       test_acc=float((logits_val.argmax(1) == y_val).double().mean()))
            if grid and result.keys:
                row["restricted_loss"] = cross_entropy(restricted_logits(logits, directions)[val_index], y_val)
                row["excluded_loss"] = cross_entropy(excluded_logits(logits, directions)[train_index], y_train)
            row["fourier_sparsity"] = key_share(frequency_norms(emb), result.keys)
            row["weight_norm"] = float(torch.sqrt(sum(v.double().pow(2).sum() for v in state.values()
                                                      if v.is_floating_point())))
            result.progress.append(row)
        result.phases = {name: next((r["step"] for r in result.progress if r[col] >= level), None)
                         for name, col, level in PHASES}
        if llc is not None:
            _add_llc(result, t, states, *llc)
    try:
        _write(result, embeddings, fmt)
    except OSError as e:
        raise UserError(f"cannot write the figures into {run_dir}: {e.strerror or e}") from None
    return result


def _add_llc(result: Analysis, t, states: list[dict[str, Tensor]], settings, every: int) -> None:
    """llc, llc_std and llc_warning (the first word of grokrun.llc.diagnose's reason) at every ``every``-th
    snapshot and the last; the reasons, per step, in ``result.llc_warnings``."""
    from grokrun.llc import estimate

    x, y = t.data["train"]

    def loss(model, xb, yb):  # the run's own training loss
        return t.loss_fn(model(xb), yb, t.loss_dtype)

    for i, (row, state) in enumerate(zip(result.progress, states)):
        if i % every and i != len(states) - 1:
            continue
        t.model.load_state_dict(state)
        est = estimate(t.model, x, y, loss, settings)
        flag = est.warning.split(":")[0].split(" (")[0].replace(" ", "_") if est.warning else None
        row.update(llc=est.mean, llc_std=est.std, llc_warning=flag)
        if est.warning:
            result.llc_warnings.append((row["step"], est.warning))


def _write(result: Analysis, embeddings: list[Tensor], fmt: str) -> None:
    from grokrun import plot_analyze as plot

    run_dir, n, keys = result.run_dir, result.p, result.keys
    pairs = max(1, min(3, min(embeddings[-1].shape) // 2))
    coords = pca(embeddings[-1], 2 * pairs)
    panels = []
    for i in range(pairs):
        xy = coords[:, 2 * i:2 * i + 2]
        k = best_frequency(xy, keys) if keys else None
        panels.append((xy.numpy(), circle_order(n, k) if k else None, k))
    result.files.append(plot.embedding_pca(panels, run_dir / f"embedding_pca.{fmt}",
                                           f"token embeddings of the {n} symbols, step {result.steps[-1]:,}"))
    k = panels[0][2]
    frames = [(pca(emb, 2).numpy(), step) for emb, step in zip(embeddings, result.steps)]
    result.files.append(plot.embedding_pca_gif(frames, circle_order(n, k) if k else None, k,
                                               run_dir / "embedding_pca.gif"))
    if result.norms is None:
        return
    share = (result.norms / result.norms.sum()).tolist()
    fourier = {"p": result.p, "step": result.steps[-1], "frequencies": list(range(1, len(share) + 1)),
               "norm_squared": result.norms.tolist(), "share": share, "key_frequencies": result.keys,
               "key_share": key_share(result.norms, result.keys),
               "rule": f"key: share >= {KEY_FACTOR:g} x 1/{len(share)} (the share of each frequency in an "
                       "embedding without structure); shares of the squared norm, constant component left out"}
    write_json_atomic(run_dir / "fourier.json", fourier)
    result.files.append(run_dir / "fourier.json")
    result.files.append(plot.fourier_spectrum(share, result.keys, KEY_FACTOR, run_dir / f"fourier.{fmt}",
                                              f"step {result.steps[-1]:,}"))
    estimated = any(row.get("llc") is not None for row in result.progress)
    columns = [c for c in PROGRESS_COLUMNS if estimated or not c.startswith("llc")]  # (the LLC's: with --llc)
    lines = [",".join(columns)]
    for row in result.progress:
        lines.append(",".join("" if row.get(c) is None else row[c] if isinstance(row[c], str) else repr(row[c])
                              for c in columns))
    write_text_atomic(run_dir / "progress.csv", "\n".join(lines) + "\n")
    result.files.append(run_dir / "progress.csv")
    result.files.append(plot.progress_measures(result.progress, result.phases, run_dir / f"progress.{fmt}"))


def analyze_paths(paths: list[Path], fmt: str = "png", warn=None, llc=None) -> list[Analysis]:
    """Every run at or under ``paths``, each checked before anything is written. A path that is no run or folder
    of runs, or a run named itself that cannot be analyzed (another task, no snapshots, an edited config, a
    damaged snapshot), is a UserError naming it; such a run found in a folder is skipped, told to ``warn``."""
    loaded = {}
    for path in map(Path, paths):
        if path.is_file():
            raise UserError(f"{path} is a file; give a run directory, or a folder of them")
        if not path.exists():
            raise UserError(f"no such run directory or folder: {path}")
        found, _ = find_runs(path)
        if not found:
            raise UserError(f"{path} holds no run directories")
        for run in found:
            try:
                loaded[run] = load_run(run)  # every run readable before any figure is written
            except UserError as e:
                if run == path or warn is None:  # (named itself: its problem is the answer)
                    raise
                warn(f"skipping {run}: {e}")  # (one of a folder's: the others are still analyzed)
    if not loaded:
        raise UserError(f"no run in {', '.join(map(str, paths))} can be analyzed (see the warnings above)")
    return [analyze_run(run, fmt, state, llc) for run, state in loaded.items()]

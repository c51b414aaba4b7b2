"""``grokrun export RUN_DIR --to transformer-lens [--step N]``: a modular decoder run's weights as a file
TransformerLens's ``HookedTransformer`` loads (its config and its state dict), checked on every input of the
task's table before it is written.

    path, gap = export(Path("results/nanda"), step=None)   # RUN/transformer_lens.pt, max |logit difference|

    saved = torch.load(path)                                # in the researcher's notebook
    model = HookedTransformer(HookedTransformerConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"], strict=False)   # (strict=False: its masks are buffers of its own)

HookedTransformer's blocks are pre-LayerNorm, x + attn(ln1(x)), then x + mlp(ln2(x)): grokrun's ``--block
prenorm``, and any block without LayerNorm (Nanda et al.'s model, ``--no-layernorm``). The Grokfast block with
LayerNorm replaces the residual stream by ln1(x), which those blocks cannot express: such runs are refused, as
are activations TransformerLens lacks. Adapters (--lora-rank) are merged into the weights they adapt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from grokrun.errors import UserError
from grokrun.results import CONFIG, atomic_write, write_json_atomic

TARGETS = ("transformer-lens",)
ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}  # grokrun's -> HookedTransformerConfig.act_fn (gelu: exact, erf)
TOLERANCE = 1e-5  # the largest logit difference an export may have, on every input of the table (float32)


def why_not(cfg) -> str | None:
    """Why a run's model has no HookedTransformer form, naming the setting; None if it has one."""
    if cfg.task != "modular":
        return f"the run is a {cfg.task} run; TransformerLens exports are of the modular decoder"
    m = cfg.modular
    if m.arch != "decoder":
        return f"--arch {m.arch} is not a transformer; export runs of --arch decoder"
    if m.block == "grokfast" and m.layernorm:
        return ("--block grokfast with LayerNorm replaces the residual stream by its LayerNorm before attention, "
                "which HookedTransformer's blocks cannot express; export runs trained with --block prenorm "
                "or --no-layernorm")
    if m.activation not in ACTIVATIONS:
        return f"--activation {m.activation} has no TransformerLens act_fn (it has: {', '.join(ACTIVATIONS)})"
    return None


def _needs_lens():
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise UserError("export --to transformer-lens needs TransformerLens with HookedTransformer (3.x): "
                        "pip install 'grokrun[interp]'") from None
    return HookedTransformer, HookedTransformerConfig


def export(run_dir: Path, step: int | None = None, out: Path | None = None) -> tuple[Path, float]:
    """Write the run's weights (its last, or snapshot ``step``'s) for TransformerLens; return the file and the
    largest difference between its logits and grokrun's over the task's whole table."""
    from grokrun import checkpoint, snapshots
    from grokrun.config import resolve
    from grokrun.models import add_lora
    from grokrun.tasks.modular import build_model, table

    run_dir = Path(run_dir)
    try:
        cfg = resolve(json.loads((run_dir / CONFIG).read_text()), {})
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {run_dir / CONFIG}: {e}") from None
    reason = why_not(cfg)
    if reason:
        raise UserError(f"{run_dir} cannot be exported to TransformerLens: {reason}")
    lens, lens_config = _needs_lens()
    if step is None:
        saved = checkpoint.load(run_dir)
        weights, step_done = saved["model"], saved["step"]
    else:
        steps = snapshots.saved_steps(run_dir)
        if step not in steps:
            raise UserError(f"{run_dir} has no snapshot at step {step:,}; it has: "
                            f"{', '.join(f'{s:,}' for s in steps) or 'none (train with --snapshots)'}")
        weights, step_done = snapshots.load(run_dir, step), step
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    model = build_model(cfg.modular).to(dtype)
    if cfg.model.lora_rank:
        add_lora(model, cfg.model.lora_rank, cfg.model.lora_alpha)
    model.load_state_dict(weights)
    model.eval()
    config = lens_settings(model, cfg, dtype)
    state = lens_state(model)
    hooked = lens(lens_config(**config))
    keys = hooked.load_state_dict(state, strict=False)
    missing = [k for k in keys.missing_keys if not k.endswith((".IGNORE", ".mask"))]  # (its buffers)
    if missing or keys.unexpected_keys:
        raise UserError(f"this TransformerLens does not take grokrun's decoder (missing {missing[:3]}, unexpected "
                        f"{keys.unexpected_keys[:3]}); use TransformerLens 3.x: pip install 'grokrun[interp]'")
    hooked.eval()
    x, _, _ = table(cfg.modular.op, cfg.modular.p)
    with torch.no_grad():
        logits = model(x)
        gap = (hooked(x)[:, -1] - logits).abs().max().item()
    if not gap <= TOLERANCE * (1 + logits.abs().max().item()):
        raise UserError(f"the TransformerLens model's logits differ from the run's by {gap:.3g} (more than "
                        f"{TOLERANCE:g} relative): not written; please report this run's config")
    path = out or run_dir / (f"transformer_lens-step{step_done}.pt" if step is not None else "transformer_lens.pt")
    saved = {"config": config, "state_dict": state, "step": step_done, "run": str(run_dir)}
    try:
        atomic_write(path, lambda f: torch.save(saved, f))
        write_json_atomic(path.with_suffix(".json"), {"step": step_done, "max_logit_difference": gap, "inputs": len(x),
                                                      "config": {**config, "dtype": str(dtype)}})
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path, gap


def lens_settings(model: nn.Module, cfg, dtype: torch.dtype) -> dict[str, Any]:
    """HookedTransformerConfig's arguments for grokrun's decoder."""
    block = model.blocks[0]
    width, heads = model.tok.weight.shape[1], block.heads
    return {"d_model": width, "d_head": width // heads, "n_heads": heads, "n_layers": len(model.blocks),
            "n_ctx": model.pos.weight.shape[0], "d_vocab": model.tok.weight.shape[0],
            "d_vocab_out": model.tok.weight.shape[0], "d_mlp": _linear(block.mlp[0])[0].shape[0],
            "act_fn": ACTIVATIONS[cfg.modular.activation],
            "normalization_type": "LN" if cfg.modular.layernorm else None, "eps": 1e-5,
            "positional_embedding_type": "standard", "attention_dir": "causal", "default_prepend_bos": False,
            "dtype": dtype}


def _linear(m: nn.Module) -> tuple[Tensor, Tensor | None]:
    """An nn.Linear's (weight, bias), an adapted one's with its low-rank update merged."""
    from grokrun.models import LoRALinear

    if isinstance(m, LoRALinear):
        return m.base.weight + (m.lora_b @ m.lora_a) * m.scale, m.base.bias
    return m.weight, m.bias


def lens_state(model: nn.Module) -> dict[str, Tensor]:
    """The decoder's weights under HookedTransformer's names and shapes: per head, W_Q, W_K, W_V (d_model,
    d_head) and W_O (d_head, d_model); the MLP's W_in, W_out as x @ W; the head as W_U with a zero b_U."""
    state: dict[str, Tensor] = {"embed.W_E": model.tok.weight, "pos_embed.W_pos": model.pos.weight}
    for i, block in enumerate(model.blocks):
        c, heads = block.qkv_weight.shape[1], block.heads
        qkv = block.qkv_weight
        if block.qkv_scale:
            qkv = qkv + (block.qkv_lora_b @ block.qkv_lora_a) * block.qkv_scale
        for name, w, b in zip("QKV", qkv.split(c), block.qkv_bias.split(c)):
            state[f"blocks.{i}.attn.W_{name}"] = w.reshape(heads, c // heads, c).transpose(1, 2)
            state[f"blocks.{i}.attn.b_{name}"] = b.reshape(heads, c // heads)
        w_o, b_o = _linear(block.proj)
        state[f"blocks.{i}.attn.W_O"] = w_o.T.reshape(heads, c // heads, c)
        state[f"blocks.{i}.attn.b_O"] = b_o
        (w_in, b_in), (w_out, b_out) = _linear(block.mlp[0]), _linear(block.mlp[2])
        state.update({f"blocks.{i}.mlp.W_in": w_in.T, f"blocks.{i}.mlp.b_in": b_in,
                      f"blocks.{i}.mlp.W_out": w_out.T, f"blocks.{i}.mlp.b_out": b_out})
        for ln in ("ln1", "ln2"):
            norm = getattr(block, ln)
            if isinstance(norm, nn.LayerNorm):
                state.update({f"blocks.{i}.{ln}.w": norm.weight, f"blocks.{i}.{ln}.b": norm.bias})
    if isinstance(model.ln_f, nn.LayerNorm):
        state.update({"ln_final.w": model.ln_f.weight, "ln_final.b": model.ln_f.bias})
    w_u, b_u = _linear(model.head)
    state["unembed.W_U"] = w_u.T
    state["unembed.b_U"] = b_u if b_u is not None else w_u.new_zeros(w_u.shape[0])
    return {k: v.detach().clone().contiguous() for k, v in state.items()}

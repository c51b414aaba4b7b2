"""grokrun export --to transformer-lens: the file reloaded as the docs say gives grokrun's logits on every input
of the table, at the final weights and at a snapshot; models HookedTransformer cannot express are one line."""

import sys
from importlib.util import find_spec

import pytest
import torch

from grokrun import checkpoint, snapshots

pytestmark = pytest.mark.skipif(find_spec("transformer_lens") is None, reason="transformer_lens is not installed")  # (found, not imported: importing it costs each worker of the suite 4 s at collection)

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "2", "--heads", "2",
        "--batch-size", "32", "--eval-every", "10", "--max-steps", "30", "--quiet"]


def train(cli, tmp_path, name, *args):
    result = cli(["train", *TINY, *args, "--out", tmp_path, "--name", name])
    assert result.exit_code == 0, result.output
    return tmp_path / name


def grokrun_logits(run_dir, weights):
    from grokrun.analyze_load import load_run

    _, task, _, _ = load_run(run_dir)
    task.model.load_state_dict(weights)
    x = torch.cat([task.data["train"][0], task.data["val"][0]])  # every input of the table
    with torch.no_grad():
        return x, task.model(x)


def reloaded_logits(path, x):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    saved = torch.load(path)  # as the docs' snippet: weights_only, HookedTransformer's own classes
    model = HookedTransformer(HookedTransformerConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"], strict=False)
    model.eval()
    with torch.no_grad():
        return model(x)[:, -1]


@pytest.mark.parametrize("args, tol", [(["--block", "prenorm"], 1e-5),
                                       (["--no-layernorm", "--activation", "relu"], 1e-5),
                                       (["--block", "prenorm", "--lora-rank", "2"], 1e-5),
                                       (["--block", "prenorm", "--dtype", "float64"], 1e-12)],
                         ids=["prenorm", "nanda-style", "lora-merged", "float64-exact"])
def test_the_exported_model_gives_the_runs_logits_at_the_end_and_at_a_snapshot(cli, tmp_path, args, tol):
    run_dir = train(cli, tmp_path, "r", *args)
    done = cli(["export", run_dir, "--to", "transformer-lens"])
    assert done.exit_code == 0, done.output
    assert f"wrote {run_dir / 'transformer_lens.pt'}" in done.stdout
    final = checkpoint.load(run_dir)["model"]
    if "--lora-rank" in args:  # the adapters moved: merging them matters
        assert final["blocks.0.proj.lora_b"].abs().max() > 0
    x, want = grokrun_logits(run_dir, final)
    assert len(x) == 121
    assert (reloaded_logits(run_dir / "transformer_lens.pt", x) - want).abs().max() < tol
    at = cli(["export", run_dir, "--step", "10"])
    assert at.exit_code == 0, at.output
    x, early = grokrun_logits(run_dir, snapshots.load(run_dir, 10))
    assert (early - want).abs().max() > 1e-3  # another model: the test below tells the two apart
    assert (reloaded_logits(run_dir / "transformer_lens-step10.pt", x) - early).abs().max() < tol


def test_a_model_transformer_lens_cannot_express_is_one_line(cli, tmp_path, monkeypatch):
    grokfast = train(cli, tmp_path, "g")  # the Grokfast block, with LayerNorm: the default
    mlp = train(cli, tmp_path, "m", "--arch", "mlp", "--width", "8")
    cases = [
        (grokfast, [], "--block grokfast with LayerNorm replaces the residual stream by its LayerNorm"),
        (mlp, [], "--arch mlp is not a transformer"),
        (grokfast, ["--to", "onnx"], "--to must be one of transformer-lens, got 'onnx'"),
    ]
    for run_dir, args, message in cases:
        result = cli(["export", run_dir, *args])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*/transformer_lens*"))
    prenorm = train(cli, tmp_path, "p", "--block", "prenorm")
    result = cli(["export", prenorm, "--step", "7"])
    assert result.exit_code == 2 and "p has no snapshot at step 7; it has: 0, 10, 20, 30\n" in result.stderr
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # not installed
    result = cli(["export", prenorm])
    assert result.exit_code == 2
    assert "needs TransformerLens with HookedTransformer (3.x): pip install 'grokrun[interp]'" in result.stderr

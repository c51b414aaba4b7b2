"""--dropout P: dropout as openai/grok places it (Power et al.'s intervention), on at training, off at evaluation.

In the decoder, on each block's feed-forward output before its residual sum (openai/grok's ``ffn_drop``; its
attention dropout is commented out there, and so absent here); in the MLPs (MNIST, parity, the pair MLP), after
every hidden activation. Each place is a module that holds no weight, so state_dict keys, checkpoints, snapshots
and --init-from are those of the same model without dropout. The masks are drawn from the global generator,
which nothing else draws from while training (each seed's batch order has its own), so a run is seeded and
resumes exactly (checkpoints keep that generator's state); seeds are not stacked with it (a stack's vmapped
masks would not be those of seeds alone): they train one after another. Models with no such place (the LSTM, the
graph network) refuse it in one line.
"""

from __future__ import annotations

from grokrun.errors import UserError


def add_dropout(model, p: float, task_name: str) -> None:
    """Put dropout of rate ``p`` into ``model`` in place (see the module's docstring)."""
    from torch import nn

    from grokrun.models import ACTIVATIONS, Block, PairMLP

    blocks = [m for m in model.modules() if isinstance(m, Block)]
    if blocks:
        for block in blocks:
            block.mlp.append(nn.Dropout(p))  # the feed-forward output, before the residual sum
        return
    layers = model.rest if isinstance(model, PairMLP) else model if type(model) is nn.Sequential else None
    if layers is None:
        raise UserError(f"--dropout: the {task_name} model ({type(model).__name__}) has no place for it (dropout goes "
                        "on the decoder's feed-forward outputs and after the MLPs' activations); drop --dropout")
    activations = tuple(ACTIVATIONS.values()) + (nn.Tanh, nn.Sigmoid)
    for i, child in enumerate(layers):
        if isinstance(child, activations):
            layers[i] = nn.Sequential(child, nn.Dropout(p))  # (same index: the weights' keys unchanged)

"""Muon for a model's hidden weight matrices, AdamW for everything else (--optimizer muon).

    grokrun train --task modular --optimizer muon --muon-lr 0.02 --muon-momentum 0.95 --ns-steps 5

Muon (torch.optim.Muon: momentum, then the update orthogonalized by a Newton–Schulz iteration) is meant for the
2-D weights inside a network; its documentation advises a standard method for the input embedding, the
output layer and the vectors (biases, norms). So ``split`` gives Muon every 2-D parameter but the embeddings'
(nn.Embedding) and the output layer's (the model's last nn.Linear), and AdamW (--lr, --beta1, --beta2, --eps)
the rest; both take --weight-decay, decoupled. Which parameter went where is listed in summary.json
(``optimizer_groups``). Muon is not elementwise (the orthogonalization mixes a matrix's entries), so seeds are
not stacked with it: they train one after another.
"""

from __future__ import annotations

import functools
from typing import Any


def split(model) -> tuple[list[str], list[str]]:
    """(names for Muon, names for AdamW) of ``model``'s trainable parameters, in the model's order."""
    from torch import nn

    outer = set()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            outer.update(id(p) for p in m.parameters())
    if linears:
        outer.update(id(p) for p in linears[-1].parameters())
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (muon if p.ndim == 2 and id(p) not in outer else adamw).append(name)
    return muon, adamw


def muon(o, named: list[tuple[str, Any]], model) -> Any:
    """The optimizer: Muon over ``split(model)``'s first list, AdamW over its second, stepped as one."""
    import torch

    to_muon = split(model)[0]
    chosen, params = set(to_muon), dict(named)
    hidden = [params[n] for n in to_muon]
    rest = [p for n, p in named if n not in chosen]
    parts = []
    if hidden:
        parts.append(torch.optim.Muon(hidden, lr=o.muon_lr, weight_decay=o.weight_decay, momentum=o.muon_momentum,
                                      ns_steps=o.ns_steps))
    if rest:
        parts.append(torch.optim.AdamW(rest, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                       weight_decay=o.weight_decay, foreach=True))  # (grokrun.optim's adamw too)
    optimizer = _combined()(parts)
    optimizer.groups = {"muon": to_muon, "adamw": [n for n, _ in named if n not in chosen]}
    return optimizer


muon.decay = None  # (--decay-to init: not for a pair of optimizers)
muon.stacks = False
muon.needs_model = True


@functools.cache
def _combined() -> type:
    import torch

    class Combined(torch.optim.Optimizer):
        """Optimizers over disjoint parameters stepped as one: their param_groups are this one's (so a
        learning-rate schedule reaches each), and its state_dict holds theirs."""

        def __init__(self, parts: list):
            self.parts = parts
            super().__init__([p for o in parts for g in o.param_groups for p in g["params"]], {})
            self.param_groups = [g for o in parts for g in o.param_groups]

        def step(self, closure=None):
            for o in self.parts:
                o.step()

        def state_dict(self) -> dict:
            return {"parts": [o.state_dict() for o in self.parts]}

        def load_state_dict(self, state: dict) -> None:
            for o, s in zip(self.parts, state["parts"]):
                o.load_state_dict(s)
            # torch's load gives each part new group dicts: they become this one's, so a schedule still reaches them
            self.param_groups = [g for o in self.parts for g in o.param_groups]

    return Combined

"""⊥Grad (Prieto et al. 2025): the gradient with its component along the weights removed, at the gradient's norm.

    f = OrthoGradFilter(); f.apply(model.parameters())
"""

from __future__ import annotations

from grokrun.filters.base import GradFilter


class OrthoGradFilter(GradFilter):
    """⊥Grad (Prieto et al. 2025, "Grokking at the edge of numerical stability"): per parameter tensor w with
    gradient g, g <- g_perp * |g| / |g_perp| where g_perp = g - (<w, g> / <w, w>) w: the component that would
    only scale the weights (and, with them, the logits) is removed, at the gradient's norm. Stateless."""

    name = "orthograd"
    EPS = 1e-30  # as published: guards a zero weight and a gradient parallel to its weight

    @classmethod
    def describe(cls, fc):
        return "⊥Grad"

    def apply(self, parameters, amplify=True):
        import torch

        if not amplify:
            return
        for p in parameters:
            if not p.requires_grad or p.grad is None:
                continue
            w, g = p.detach(), p.grad
            dims = tuple(range(1 if self.stacked_seeds else 0, g.dim()))  # per seed where stacked
            if not dims:  # a stacked scalar: each seed's parameter is a single number, parallel to itself
                continue
            along = (w * g).sum(dims, keepdim=True) / ((w * w).sum(dims, keepdim=True) + self.EPS)
            perp = g - along * w
            scale = torch.linalg.vector_norm(g, dim=dims, keepdim=True) / (
                torch.linalg.vector_norm(perp, dim=dims, keepdim=True) + self.EPS)
            g.copy_(perp * scale)

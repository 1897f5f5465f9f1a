"""Canonical weights -> what ``GatedMLPMOE(W13, W2)`` takes, and back (``to_canonical``, exact).

Layout ``ipex_gated``: ``w13`` ``[E, 2*I, H]`` with the gate (w1) rows first, then the up (w3)
rows, and ``w2`` ``[E, H, I]``, in the compute dtype: the canonical layout. IPEX 2.8 splits
``W13[:, :I]`` as the gate and ``W13[:, I:]`` as the up projection (``_IPEXGatedMLPMOECPU`` and the
XPU module read it the same way); no ``[w3; w1]`` swap is needed. The tensors are fresh copies:
IPEX's XPU module re-points ``W13.data`` / ``W2.data`` at its own transposed copies when it is
built, which must never reach the layer's canonical tensors.
"""

from __future__ import annotations

import torch

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig, WeightError

BACKEND = "xpu_ipex"
LAYOUT = "ipex_gated"


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical ``w13``/``w2`` -> ``KernelWeights(backend="xpu_ipex")`` holding contiguous copies."""
    if config.scheme.weight is not None:
        raise WeightError("scheme", "bf16 or fp16 (what the xpu_ipex backend converts)", config.scheme.name)
    tensors = {name: t.clone(memory_format=torch.contiguous_format) for name, t in weights.items()}
    return KernelWeights(backend=BACKEND, config=config, tensors=tensors, layout=LAYOUT)


def to_canonical(kernel: KernelWeights) -> CanonicalWeights:
    """Exact inverse of ``convert`` (valid before IPEX has taken the tensors over)."""
    if kernel.backend != BACKEND or kernel.layout != LAYOUT:
        raise WeightError("kernel", f"backend {BACKEND!r} layout {LAYOUT!r}",
                          f"backend {kernel.backend!r} layout {kernel.layout!r}")
    return CanonicalWeights(**{name: t.clone() for name, t in kernel.tensors.items()})

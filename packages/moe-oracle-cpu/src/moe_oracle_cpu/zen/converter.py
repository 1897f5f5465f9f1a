"""``cpu_zentorch`` weight layout: canonical, except that swigluoai interleaves gate and up rows.

``zentorch_fused_moe`` takes unpacked row-major ``w13`` ``[E_l, 2*I, H]`` and ``w2``
``[E_l, H, I]`` (it prepacks internally and caches the packed copies). For ``silu`` and ``gelu``
it splits w13 as we do, gate rows then up rows; for ``swigluoai`` it reads them interleaved as
gpt-oss checkpoints store them (row ``2j`` is gate ``j``, row ``2j+1`` is up ``j``), so the
converter interleaves w13 and its bias (checked against the reference on this machine's zentorch
2.13.0.1). Biases go in the compute dtype.
"""

from __future__ import annotations

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.kernel.weights import CanonicalWeights, KernelWeights
from moe_oracle_cpu.zen.spec import BACKEND


def interleave(w: torch.Tensor) -> torch.Tensor:
    """``[E, 2*I, ...]`` gate rows then up rows -> ``[E, 2*I, ...]`` with gate j, up j at rows 2j, 2j+1."""
    e, n = w.shape[:2]
    gate, up = w[:, : n // 2], w[:, n // 2:]
    return torch.stack([gate, up], dim=2).reshape(e, n, *w.shape[2:])


def deinterleave(w: torch.Tensor) -> torch.Tensor:
    """The inverse of ``interleave``."""
    return torch.cat([w[:, 0::2], w[:, 1::2]], dim=1)


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical tensors -> ``KernelWeights(backend="cpu_zentorch")``: contiguous, biases in the
    compute dtype, w13 (and its bias) interleaved for swigluoai. New tensors; inputs untouched."""
    swiglu = config.activation == "swigluoai"
    tensors = {"w13": (interleave(weights.w13) if swiglu else weights.w13).contiguous(),
               "w2": weights.w2.contiguous()}
    if weights.w13_bias is not None:
        b13 = weights.w13_bias.to(config.dtype)
        tensors["w13_bias"] = (interleave(b13) if swiglu else b13).contiguous()
    if weights.w2_bias is not None:
        tensors["w2_bias"] = weights.w2_bias.to(config.dtype).contiguous()
    return KernelWeights(backend=BACKEND, config=config, tensors=tensors,
                         layout="gate_up_interleaved" if swiglu else "canonical")


def to_canonical(weights: KernelWeights) -> CanonicalWeights:
    """The inverse of ``convert`` (biases come back in the compute dtype)."""
    swiglu = weights.layout == "gate_up_interleaved"
    tensors = dict(weights.tensors)
    if swiglu:
        tensors["w13"] = deinterleave(tensors["w13"])
        if "w13_bias" in tensors:
            tensors["w13_bias"] = deinterleave(tensors["w13_bias"])
    return CanonicalWeights(**tensors)

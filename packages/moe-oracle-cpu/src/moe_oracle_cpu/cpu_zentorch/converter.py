"""``cpu_zentorch`` weight layout: canonical, except that swigluoai interleaves gate and up rows.

``zentorch_fused_moe`` takes unpacked row-major ``w13`` ``[E_l, 2*I, H]`` and ``w2``
``[E_l, H, I]`` (it prepacks internally and caches the packed copies). For ``silu`` and ``gelu``
it splits w13 as we do, gate rows then up rows; for ``swigluoai`` it reads them interleaved as
gpt-oss checkpoints store them (row ``2j`` is gate ``j``, row ``2j+1`` is up ``j``), so the
converter interleaves w13 and its bias (checked against the reference on this machine's zentorch
2.13.0.1). Biases go in the compute dtype.
"""

from __future__ import annotations

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig, deinterleave_gate_up, interleave_gate_up
from moe_oracle_cpu.cpu_zentorch.spec import BACKEND


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical tensors -> ``KernelWeights(backend="cpu_zentorch")``: contiguous, biases in the
    compute dtype, w13 (and its bias) interleaved for swigluoai. New tensors; inputs untouched."""
    swiglu = config.activation == "swigluoai"
    tensors = {"w13": (interleave_gate_up(weights.w13) if swiglu else weights.w13).contiguous(),
               "w2": weights.w2.contiguous()}
    if weights.w13_bias is not None:
        b13 = weights.w13_bias.to(config.dtype)
        tensors["w13_bias"] = (interleave_gate_up(b13) if swiglu else b13).contiguous()
    if weights.w2_bias is not None:
        tensors["w2_bias"] = weights.w2_bias.to(config.dtype).contiguous()
    return KernelWeights(backend=BACKEND, config=config, tensors=tensors,
                         layout="gate_up_interleaved" if swiglu else "canonical")


def to_canonical(weights: KernelWeights) -> CanonicalWeights:
    """The inverse of ``convert`` (biases come back in the compute dtype)."""
    swiglu = weights.layout == "gate_up_interleaved"
    tensors = dict(weights.tensors)
    if swiglu:
        tensors["w13"] = deinterleave_gate_up(tensors["w13"])
        if "w13_bias" in tensors:
            tensors["w13_bias"] = deinterleave_gate_up(tensors["w13_bias"])
    return CanonicalWeights(**tensors)

"""Canonical weights -> vllm-xpu-kernels' layout, and back (``to_canonical`` is the exact inverse).

Shape letters: E local experts, I intermediate size per partition, H hidden size, N rows of w13
(``2*I`` gated, ``I`` for relu2), G = K/32 (mx) or K/128 (int4) scale groups along K.

| scheme | layout | w13 / w2 | w13_scale / w2_scale |
|---|---|---|---|
| bf16, fp16 | ``xpu_kn`` | ``[E, H, N]`` / ``[E, I, H]`` (transposed) | - |
| fp8_tensor | ``xpu_kn`` | e4m3 ``[E, H, N]`` / ``[E, I, H]`` | ``[E]`` fp32 as canonical |
| mxfp8 | ``xpu_kn`` | e4m3 ``[E, H, N]`` / ``[E, I, H]`` | e8m0 uint8 ``[E, H/32, N]`` / ``[E, I/32, H]`` |
| mxfp4 | ``xpu_nk4`` | ``float4_e2m1fn_x2`` ``[E, N, H/2]`` / ``[E, H, I/2]`` (bytes as canonical) | e8m0 ``[E, N, G]`` |
| int4_w4a16 | ``xpu_nk4`` | uint4 codes (zero point 8) uint8 ``[E, N, H/2]`` as canonical | ``[E, N, G]`` in the compute dtype |

The library infers the scheme from these dtypes and shapes (fp8 + 1-D fp32 scales: per tensor;
fp8 + uint8 scales: mxfp8; ``float4_e2m1fn_x2``: mxfp4; uint8: int4). Its 4-bit kernels take
``[E, N, K/2]``, every other format ``[E, K, N]``. Its ``swigluoai`` kernel reads gate and up
interleaved (``gate = h[..., 0::2]``, ``up = h[..., 1::2]``), so for swigluoai the N axis of w13,
its scales and its bias is reordered ``g0 u0 g1 u1 ...``; other activations keep canonical gate
rows then up rows (the library splits ``h[:, :I]`` / ``h[:, I:]``). Biases and int4 scales are
cast to the compute dtype, as the library's own tests pass them (the inverse casts back, exact
when the canonical tensors already have that dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig, WeightError, deinterleave_gate_up, interleave_gate_up
from moe_oracle_xpu.xpu.spec import BACKEND

FP4X2 = getattr(torch, "float4_e2m1fn_x2", torch.uint8)
LAYOUTS = {"bf16": "xpu_kn", "fp16": "xpu_kn", "fp8_tensor": "xpu_kn", "mxfp8": "xpu_kn",
           "mxfp4": "xpu_nk4", "int4_w4a16": "xpu_nk4"}


def _t(x: torch.Tensor) -> torch.Tensor:
    """``[E, A, B]`` -> ``[E, B, A]``, contiguous (through a byte view: fp8 copies need no kernels)."""
    if x.element_size() == 1:
        return x.view(torch.uint8).transpose(1, 2).contiguous().view(x.dtype)
    return x.transpose(1, 2).contiguous()


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical tensors -> ``KernelWeights(backend="xpu")`` in the layout of the table above.

    Inputs are never modified. Raises ``WeightError`` for a scheme the library does not take.
    """
    scheme = config.scheme.base_name
    if scheme not in LAYOUTS:
        raise WeightError("scheme", f"one of {', '.join(LAYOUTS)} (what the xpu backend converts)", scheme)
    layout = LAYOUTS[scheme]
    t = dict(weights.items())
    extras: dict[str, Any] = {"interleaved": config.activation == "swigluoai"}
    # The N axis of each w13 tensor, in canonical layout: rows of data and scales, columns of the bias.
    if extras["interleaved"]:
        for name in ("w13", "w13_scale", "w13_bias"):
            if name in t and t[name].dim() > 1:
                t[name] = interleave_gate_up(t[name].view(torch.uint8) if t[name].element_size() == 1
                                             else t[name], dim=1).view(t[name].dtype)
    if layout == "xpu_kn":
        t["w13"], t["w2"] = _t(t["w13"]), _t(t["w2"])
        if scheme == "mxfp8":
            t["w13_scale"], t["w2_scale"] = _t(t["w13_scale"]), _t(t["w2_scale"])
    elif scheme == "mxfp4":
        t["w13"], t["w2"] = t["w13"].view(FP4X2), t["w2"].view(FP4X2)
    else:  # int4_w4a16
        extras["scale_dtype"] = t["w13_scale"].dtype
        t["w13_scale"], t["w2_scale"] = t["w13_scale"].to(config.dtype), t["w2_scale"].to(config.dtype)
    if "w13_bias" in t:
        extras["bias_dtype"] = t["w13_bias"].dtype
        t["w13_bias"], t["w2_bias"] = t["w13_bias"].to(config.dtype), t["w2_bias"].to(config.dtype)
    return KernelWeights(backend=BACKEND, config=config, tensors=t, layout=layout, extras=extras)


def to_canonical(kernel: KernelWeights) -> CanonicalWeights:
    """Exact inverse of ``convert`` (up to the compute-dtype casts documented above)."""
    if kernel.backend != BACKEND:
        raise WeightError("kernel.backend", repr(BACKEND), repr(kernel.backend))
    config, extras = kernel.config, kernel.extras
    scheme = config.scheme.base_name
    t = dict(kernel.tensors)
    if kernel.layout == "xpu_kn":
        t["w13"], t["w2"] = _t(t["w13"]), _t(t["w2"])
        if scheme == "mxfp8":
            t["w13_scale"], t["w2_scale"] = _t(t["w13_scale"]), _t(t["w2_scale"])
    elif scheme == "mxfp4":
        t["w13"], t["w2"] = t["w13"].view(torch.uint8), t["w2"].view(torch.uint8)
    else:
        t["w13_scale"], t["w2_scale"] = _cast(t, ("w13_scale", "w2_scale"), extras, "scale_dtype")
    if "w13_bias" in t:
        t["w13_bias"], t["w2_bias"] = _cast(t, ("w13_bias", "w2_bias"), extras, "bias_dtype")
    if extras.get("interleaved"):
        for name in ("w13", "w13_scale", "w13_bias"):
            if name in t and t[name].dim() > 1:
                t[name] = deinterleave_gate_up(t[name].view(torch.uint8) if t[name].element_size() == 1
                                               else t[name], dim=1).view(t[name].dtype)
    return CanonicalWeights(**t)


def _cast(t: dict[str, torch.Tensor], names: tuple[str, str], extras: Mapping[str, Any],
          key: str) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = extras[key]
    return t[names[0]].to(dtype), t[names[1]].to(dtype)

"""Canonical weights -> ``flashinfer_cutlass`` layout, and back (``to_canonical``, bit-exact).

E local experts, H hidden, I intermediate per partition; H', I' after zero padding (``padding``);
``w31`` is w13 with its halves swapped to ``[up; gate]`` (non-gated w13 is kept as it is).
Every tensor keeps its canonical name; derived tensors get their FlashInfer role as name.

=====================  ========================================================================
scheme                 layout (``KernelWeights.tensors``)
=====================  ========================================================================
bf16 / fp16            I' = ceil(I/16)*16. w13 ``[E, 2I', H]`` w31; w2 ``[E, H, I']``;
                       w13_bias ``[E, 2I']`` w31, w2_bias ``[E, H]`` (compute dtype).
fp8_tensor_static      I' as above. w13/w2 e4m3 as above; canonical scales kept, plus
                       ``fc1_dequant = w13_scale * a13_scale`` ``[E]``, ``fc2_quant = 1 / a2_scale``
                       (0-D), ``fc2_dequant = w2_scale * a2_scale`` ``[E]``, ``fc1_input_dequant =
                       a13_scale`` (0-D): FlashInfer's four fp8 ``quant_scales`` (float32).
fp8_block (9.0)        w13 e4m3 ``[E, 2I, H]`` w31; w13_scale ``[E, 2I/128, H/128]`` w31 (halves
                       of block rows; I % 128 == 0 is checked); w2, w2_scale canonical.
mxfp4 (9.0, bf16 act)  H' = ceil(H/128)*128, I' = ceil(I/128)*128. w13 uint8 ``[E, 2I', H'/2]``
                       w31, then ``sm90_interleave_fp4``; w2 ``[E, H', I'/2]`` interleaved;
                       w13_scale ``[E, H'/128, 4*2I']`` = ``sm90_interleave_scales`` of the w31
                       ``[E, 2I', H'/32]`` e8m0; w2_scale ``[E, I'/128, 4*H']``; biases padded (w31).
mxfp4_a8 / nvfp4       H' (mxfp4_a8 only) and I' as above. w13 uint8 ``[E, 2I', H'/2]`` w31; w2
(10.x, 12.x)           ``[E, H', I'/2]``; scales (e8m0 / e4m3 bytes) w31 then ``swizzle_128x4``:
                       w13_scale ``[E, 2I', H'/g]``, w2_scale ``[E, H', I'/g]`` (g = 32 / 16).
                       nvfp4 adds ``fc1_act_global = 1 / a13_scale`` and ``fc2_act_global =
                       1 / a2_scale`` (0-D, the kernel's quantization direction) and ``fc1_alpha =
                       w13_global_scale * a13_scale``, ``fc2_alpha = w2_global_scale * a2_scale``
                       ``[E]``; canonical global and activation scales are kept.
=====================  ========================================================================

Gated activations with SwiGLU parameters add ``swiglu_alpha``/``swiglu_beta``/``swiglu_limit``
float32 ``[E]`` (``moe_oracle_cuda.activation``). ``extras`` holds the caller's H and I.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig
from moe_oracle_cuda.activation import swiglu_tensors
from moe_oracle_cuda.flashinfer_cutlass.spec import BACKEND
from moe_oracle_cuda.layouts import (
    sm90_deinterleave_fp4,
    sm90_deinterleave_scales,
    sm90_interleave_fp4,
    sm90_interleave_scales,
    swap_halves,
    swizzle_128x4,
    unswizzle_128x4,
)
from moe_oracle_cuda.padding import Sizes, pad_canonical, unpad_canonical

Tensors = dict[str, torch.Tensor]
# (hidden multiple, intermediate multiple) the converter pads to, per scheme.
ALIGNMENT = {
    "bf16": (1, 16), "fp16": (1, 16), "fp8_tensor_static": (1, 16), "fp8_block": (1, 1),
    "mxfp4": (128, 128), "mxfp4_a8": (128, 128), "nvfp4": (1, 128),
}
SCALE_GROUP = {"mxfp4_a8": 32, "nvfp4": 16}
_GATED_NAMES = ("w13", "w13_scale")


def _w31(t: Tensors, config: MoEConfig, names: tuple[str, ...] = _GATED_NAMES) -> Tensors:
    """Swap gate/up halves of the named ``[E, 2I, ...]`` tensors and of ``w13_bias`` ``[E, 2I]``
    (a per-tensor ``[E]`` scale has no halves)."""
    if not config.is_gated:
        return t
    out = dict(t)
    for name in names:
        if name in t and t[name].dim() >= 2:
            out[name] = swap_halves(t[name], dim=1)
    if "w13_bias" in t:
        out["w13_bias"] = swap_halves(t["w13_bias"], dim=1)
    return out


def _fp8_tensor(t: Tensors) -> Tensors:
    a13, a2 = t["a13_scale"].float().reshape(()), t["a2_scale"].float().reshape(())
    return {**t,
            "fc1_dequant": (t["w13_scale"].float() * a13).contiguous(),
            "fc2_quant": (1.0 / a2).contiguous(),
            "fc2_dequant": (t["w2_scale"].float() * a2).contiguous(),
            "fc1_input_dequant": a13.clone()}


def _mxfp4_sm90(t: Tensors) -> Tensors:
    return {**t,
            "w13": sm90_interleave_fp4(t["w13"]), "w2": sm90_interleave_fp4(t["w2"]),
            "w13_scale": sm90_interleave_scales(t["w13_scale"]), "w2_scale": sm90_interleave_scales(t["w2_scale"])}


def _swizzled(t: Tensors) -> Tensors:
    out = {**t}
    for name in ("w13_scale", "w2_scale"):
        scale = t[name]
        out[name] = swizzle_128x4(scale.view(torch.uint8)).view(scale.dtype)
    return out


def _nvfp4(t: Tensors) -> Tensors:
    out = _swizzled(t)
    a13, a2 = t["a13_scale"].float().reshape(()), t["a2_scale"].float().reshape(())
    out.update({"fc1_act_global": (1.0 / a13).contiguous(), "fc2_act_global": (1.0 / a2).contiguous(),
                "fc1_alpha": (t["w13_global_scale"].float() * a13).contiguous(),
                "fc2_alpha": (t["w2_global_scale"].float() * a2).contiguous()})
    return out


_LAYOUT: dict[str, Callable[[Tensors], Tensors]] = {
    "bf16": dict, "fp16": dict, "fp8_tensor_static": _fp8_tensor, "fp8_block": dict,
    "mxfp4": _mxfp4_sm90, "mxfp4_a8": _swizzled, "nvfp4": _nvfp4,
}
_DERIVED = ("fc1_dequant", "fc2_quant", "fc2_dequant", "fc1_input_dequant", "fc1_act_global", "fc2_act_global",
            "fc1_alpha", "fc2_alpha", "swiglu_alpha", "swiglu_beta", "swiglu_limit")


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical tensors -> the layout above; pure (inputs untouched, padded config returned)."""
    scheme = config.scheme.base_name
    if scheme not in _LAYOUT:
        raise ValueError(f"scheme: {BACKEND} converts {', '.join(_LAYOUT)}, got {scheme}")
    hidden_multiple, inter_multiple = ALIGNMENT[scheme]
    sizes = Sizes.of(config, hidden_multiple=hidden_multiple, inter_multiple=inter_multiple)
    tensors = _w31(pad_canonical(dict(weights.items()), config, sizes), config)
    tensors = _LAYOUT[scheme](tensors)
    tensors.update(swiglu_tensors(config, weights.w13.device))
    return KernelWeights(backend=BACKEND, config=sizes.config(config), tensors=tensors,
                         layout=f"{BACKEND}/{scheme}", extras=sizes.extras)


def to_canonical(weights: KernelWeights) -> CanonicalWeights:
    """Inverse of ``convert``: the canonical tensors it was made from, bit for bit."""
    config = weights.config
    scheme = config.scheme.base_name
    t = {name: v for name, v in weights.tensors.items() if name not in _DERIVED}
    if scheme == "mxfp4":
        t.update(w13=sm90_deinterleave_fp4(t["w13"]), w2=sm90_deinterleave_fp4(t["w2"]),
                 w13_scale=sm90_deinterleave_scales(t["w13_scale"]), w2_scale=sm90_deinterleave_scales(t["w2_scale"]))
    elif scheme in SCALE_GROUP:
        g, h, i = SCALE_GROUP[scheme], config.hidden_size, config.intermediate_size_per_partition
        for name, rows, cols in (("w13_scale", config.w13_rows, h // g), ("w2_scale", h, i // g)):
            scale = t[name]
            t[name] = unswizzle_128x4(scale.view(torch.uint8), rows=rows, cols=cols).view(scale.dtype)
    t = _w31(t, config)
    return CanonicalWeights(**unpad_canonical(t, config, Sizes.from_extras(config, weights.extras)))

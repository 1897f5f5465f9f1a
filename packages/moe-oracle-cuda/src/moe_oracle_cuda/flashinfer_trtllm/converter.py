"""Canonical weights -> ``flashinfer_trtllm`` layout, and back (``to_canonical``, bit-exact).

E local experts, H hidden, I intermediate per partition; H', I' after zero padding. Gated w13 is
first swapped to ``w31 = [up; gate]``, then each expert's rows are permuted by ``P13 =
gated_interleave_rows(2I')[shuffle_rows(2I')]`` (rows ``u0, g0, u1, g1, ...``, then TRT-LLM-gen's
128-row epilogue shuffle); non-gated w13 and every w2 get ``P2 = shuffle_rows(rows)`` only. Scales
and biases of a row follow the row.

=====================  ========================================================================
scheme                 layout (``KernelWeights.tensors``)
=====================  ========================================================================
bf16                   I' = ceil(I/128)*128. w13 P13 rows, then ``to_block_major_k`` ->
                       ``[E, H/64, 2I', 64]``; w2 P2 rows -> ``[E, I'/64, H, 64]`` (BlockMajorK:
                       128-byte blocks of 64 bf16 along K).
fp8_tensor_static      I' = ceil(I/16)*16. w13 e4m3 ``[E, 2I', H]`` P13 rows, w2 ``[E, H, I']`` P2
                       rows (MajorK); canonical scales kept plus ``output1_scale = w13_scale *
                       a13_scale / a2_scale``, ``output1_gate_scale = w13_scale * a13_scale``,
                       ``output2_scale = w2_scale * a2_scale`` (float32 ``[E]``).
fp8_block              w13 e4m3 ``[E, 2I, H]`` w31 and w13_scale ``[E, 2I/128, H/128]`` w31 (no
                       row shuffle: MajorK, ``use_shuffled_weight=False``); w2, w2_scale canonical.
nvfp4                  I' = ceil(I/128)*128. w13 uint8 ``[E, 2I', H/2]`` P13 rows, w13_scale e4m3
                       ``[E, 2I', H/16]`` P13 rows then ``swizzle_128x4``; w2 ``[E, H, I'/2]`` and
                       w2_scale ``[E, H, I'/16]`` P2 rows, swizzled; canonical global and
                       activation scales kept, plus ``output1_scale = w13_global_scale * a13_scale /
                       a2_scale``, ``output1_gate_scale = w13_global_scale * a13_scale``,
                       ``output2_scale = w2_global_scale * a2_scale`` (float32 ``[E]``).
mxfp4 / mxfp4_a8       H' = ceil(H/256)*256, I' = ceil(I/256)*256. As nvfp4 with e8m0 scales of
                       32 elements (``[E, 2I', H'/32]``, ``[E, H', I'/32]``), no output scales.
=====================  ========================================================================

Biases (fp4 schemes) follow their rows: w13_bias P13 (after the w31 swap), w2_bias P2.
Gated activations with SwiGLU parameters add ``swiglu_alpha``/``swiglu_beta``/``swiglu_limit``
float32 ``[E]``. ``extras`` holds the caller's H and I.
"""

from __future__ import annotations

import torch

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig
from moe_oracle_cuda.activation import swiglu_tensors
from moe_oracle_cuda.flashinfer_trtllm.spec import BACKEND
from moe_oracle_cuda.layouts import (
    from_block_major_k,
    gated_interleave_rows,
    invert,
    permute_rows,
    shuffle_rows,
    swap_halves,
    swizzle_128x4,
    to_block_major_k,
    unswizzle_128x4,
)
from moe_oracle_cuda.padding import Sizes, pad_canonical, unpad_canonical

Tensors = dict[str, torch.Tensor]
ALIGNMENT = {
    "bf16": (1, 128), "fp8_tensor_static": (1, 16), "fp8_block": (1, 1), "nvfp4": (1, 128),
    "mxfp4": (256, 256), "mxfp4_a8": (256, 256),
}
SCALE_GROUP = {"nvfp4": 16, "mxfp4": 32, "mxfp4_a8": 32}
_SHUFFLED = ("bf16", "fp8_tensor_static", "nvfp4", "mxfp4", "mxfp4_a8")
_DERIVED = ("output1_scale", "output1_gate_scale", "output2_scale", "swiglu_alpha", "swiglu_beta", "swiglu_limit")


def row_permutations(config: MoEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P13, P2)``: the row index applied to every expert's w13 ``[N', ...]`` and w2 ``[H', ...]``."""
    n, h = config.w13_rows, config.hidden_size
    p2 = shuffle_rows(h)
    if not config.is_gated:
        return shuffle_rows(n), p2
    return gated_interleave_rows(n)[shuffle_rows(n)], p2


def _swap(t: Tensors, config: MoEConfig) -> Tensors:
    if not config.is_gated:
        return t
    out = dict(t)
    for name in ("w13", "w13_scale", "w13_bias"):
        if name in t and t[name].dim() >= 2:
            out[name] = swap_halves(t[name], dim=1)
    return out


def _permute(t: Tensors, p13: torch.Tensor, p2: torch.Tensor) -> Tensors:
    out = dict(t)
    for name, index in (("w13", p13), ("w13_scale", p13), ("w13_bias", p13),
                        ("w2", p2), ("w2_scale", p2), ("w2_bias", p2)):
        if name in t and t[name].dim() >= 2:
            out[name] = permute_rows(t[name], index)
    return out


def _scale_bytes(t: Tensors, rows_cols: dict[str, tuple[int, int]] | None = None) -> Tensors:
    """Swizzle (or, with ``rows_cols``, unswizzle) the w13/w2 block scales through their bytes."""
    out = dict(t)
    for name in ("w13_scale", "w2_scale"):
        scale = t[name]
        raw = scale.view(torch.uint8)
        done = swizzle_128x4(raw) if rows_cols is None else unswizzle_128x4(raw, rows=rows_cols[name][0],
                                                                           cols=rows_cols[name][1])
        out[name] = done.view(scale.dtype)
    return out


def _output_scales(t: Tensors, weight_scale: str) -> Tensors:
    a13, a2 = t["a13_scale"].float().reshape(()), t["a2_scale"].float().reshape(())
    w13, w2 = t[f"w13_{weight_scale}"].float(), t[f"w2_{weight_scale}"].float()
    return {**t, "output1_scale": (w13 * a13 / a2).contiguous(), "output1_gate_scale": (w13 * a13).contiguous(),
            "output2_scale": (w2 * a2).contiguous()}


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical tensors -> the layout above; pure (inputs untouched, padded config returned)."""
    scheme = config.scheme.base_name
    if scheme not in ALIGNMENT:
        raise ValueError(f"scheme: {BACKEND} converts {', '.join(ALIGNMENT)}, got {scheme}")
    hidden_multiple, inter_multiple = ALIGNMENT[scheme]
    sizes = Sizes.of(config, hidden_multiple=hidden_multiple, inter_multiple=inter_multiple)
    padded = sizes.config(config)
    t = _swap(pad_canonical(dict(weights.items()), config, sizes), config)
    if scheme in _SHUFFLED:
        t = _permute(t, *row_permutations(padded))
    if scheme in SCALE_GROUP:
        t = _scale_bytes(t)
    if scheme == "bf16":
        t.update(w13=to_block_major_k(t["w13"]), w2=to_block_major_k(t["w2"]))
    if scheme == "fp8_tensor_static":
        t = _output_scales(t, "scale")
    if scheme == "nvfp4":
        t = _output_scales(t, "global_scale")
    t.update(swiglu_tensors(config, weights.w13.device))
    return KernelWeights(backend=BACKEND, config=padded, tensors=t, layout=f"{BACKEND}/{scheme}",
                         extras=sizes.extras)


def to_canonical(weights: KernelWeights) -> CanonicalWeights:
    """Inverse of ``convert``: the canonical tensors it was made from, bit for bit."""
    config = weights.config
    scheme = config.scheme.base_name
    t = {name: v for name, v in weights.tensors.items() if name not in _DERIVED}
    if scheme == "bf16":
        t.update(w13=from_block_major_k(t["w13"]), w2=from_block_major_k(t["w2"]))
    if scheme in SCALE_GROUP:
        g, h = SCALE_GROUP[scheme], config.hidden_size
        t = _scale_bytes(t, {"w13_scale": (config.w13_rows, h // g),
                                          "w2_scale": (h, config.intermediate_size_per_partition // g)})
    if scheme in _SHUFFLED:
        p13, p2 = row_permutations(config)
        t = _permute(t, invert(p13), invert(p2))
    t = _swap(t, config)
    return CanonicalWeights(**unpad_canonical(t, config, Sizes.from_extras(config, weights.extras)))

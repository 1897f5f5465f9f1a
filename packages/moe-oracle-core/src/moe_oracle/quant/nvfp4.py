"""NVFP4: e2m1 values, one ``float8_e4m3fn`` scale per 16 consecutive elements along K, and one
float32 global scale per tensor (per expert for weights, one scalar for activations).

Two-level scaling (NVIDIA's NVFP4 definition): ``x ~= e2m1 * float(block_scale) * global_scale``.

Direction of the global scale: here it is always the **dequantization** multiplier,
``global_scale = amax / (448 * 6)``, i.e. ModelOpt checkpoints' ``weight_scale_2`` and
``input_scale``. NVIDIA's kernels (TensorRT-LLM, FlashInfer ``fp4_quantize``) take the
reciprocal, ``448 * 6 / amax``; converters invert it. With that choice the block scales
``amax_block / 6 / global_scale`` span e4m3's range up to 448.

Quantization: ``block_scale = e4m3(amax_block / 6 / global_scale)`` (round to nearest even,
saturating), then ``e2m1(x / (float(block_scale) * global_scale))`` (ties to even, saturating at
6); a block whose e4m3 scale is 0 stores zeros. A zero tensor gets global scale 1.0.

Storage (E experts, N rows, K elements, K even, ``G = ceil(K/16)``; a partial trailing block is
quantized as if zero-padded): values uint8 ``[E, N, K/2]`` packed two per byte, the even element
in the low nibble; block scales ``float8_e4m3fn`` ``[E, N, G]``; global scales float32 ``[E]``.
"""

from __future__ import annotations

import torch

from moe_oracle.quant._common import (
    div_scalar,
    merge_groups,
    mul_groups,
    pack_nibbles,
    safe_scale,
    split_groups,
)
from moe_oracle.quant.fp8 import FP8_E4M3_MAX, to_e4m3
from moe_oracle.quant.mx import E2M1_MAX, decode_e2m1_packed, encode_e2m1

NVFP4_BLOCK = 16


def nvfp4_global_scale(amax: torch.Tensor) -> torch.Tensor:
    """Dequantization global scale ``amax / (448 * 6)`` float32, shaped like ``amax``; 1.0 where amax is 0."""
    return safe_scale(amax, FP8_E4M3_MAX * E2M1_MAX)


def quantize_nvfp4(x: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4-quantize ``x`` with a given global scale.

    Parameters
    ----------
    x : [..., K] float, K even
    global_scale : float32 broadcastable to ``[..., 1]`` (``[E, 1, 1]`` for weights ``[E, N, K]``,
        0-D for activations)

    Returns
    -------
    data : [..., K/2] uint8, two e2m1 codes per byte, low nibble first
    scale : [..., ceil(K/16)] float8_e4m3fn block scales
    """
    x = x.float()
    k = x.shape[-1]
    gs = global_scale.float().to(x.device)  # on x's device: see fp8.quantize_fp8_static
    xg = split_groups(x, NVFP4_BLOCK)  # [..., G, 16]
    block_scale = to_e4m3(div_scalar(xg.abs().amax(dim=-1), E2M1_MAX) / gs)  # [..., G]
    denom = (block_scale.float() * gs)[..., None]  # [..., G, 1]
    scaled = torch.where(denom > 0, xg / denom, torch.zeros_like(xg))
    return pack_nibbles(encode_e2m1(merge_groups(scaled, k))), block_scale


def dequantize_nvfp4(data: torch.Tensor, scale: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """``[..., K/2]`` packed e2m1, ``[..., ceil(K/16)]`` e4m3 block scales, global scale broadcastable
    to ``[..., 1]`` -> ``[..., K]`` float32."""
    return mul_groups(decode_e2m1_packed(data), scale.float(), NVFP4_BLOCK) * global_scale.float()


def quantize_nvfp4_weights(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights ``[E, N, K]`` -> (data ``[E, N, K/2]`` uint8, scale ``[E, N, ceil(K/16)]`` e4m3,
    global scale ``[E]`` float32 from each expert's amax)."""
    global_scale = nvfp4_global_scale(w.float().abs().amax(dim=(1, 2)))
    data, scale = quantize_nvfp4(w, global_scale[:, None, None])
    return data, scale, global_scale

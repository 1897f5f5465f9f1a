"""FP8 e4m3 (``torch.float8_e4m3fn``): per-tensor, per-channel and 128x128-block weights;
per-tensor (dynamic or static), per-token and per-token-group activations.

Storage (DESIGN.md's table; E experts, N output rows, K input elements):

- values: ``float8_e4m3fn`` ``[E, N, K]``; e4m3fn has no infinities, its largest finite value is
  448 (``0x7E``; ``0x7F``/``0xFF`` are NaN). Casting saturates: ``|x / s| > 448`` is stored as 448,
  and rounding is to nearest, ties to even (torch's cast).
- scales: float32, the dequantization multiplier ``x ~= q * s`` with ``s = amax / 448`` over the
  scale's elements (1.0 where amax is 0, so all-zero groups stay finite):
  per tensor ``[E]`` (one per expert), per channel ``[E, N]``, per block ``[E, ceil(N/128), ceil(K/128)]``.
- activations ``[..., K]``: per tensor a 0-D scale, per token ``[..., 1]``, per token group of
  128 ``[..., ceil(K/128)]``; quantization divides by the scale (``q = e4m3(x / s)``).
"""

from __future__ import annotations

import torch

from moe_oracle.quant._common import amax_all, block_amax, div_groups, expand_blocks, mul_groups, safe_scale, split_groups

FP8_E4M3_MAX = 448.0
BLOCK = (128, 128)


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Saturating round-to-nearest-even cast of ``x`` (any float dtype) to ``float8_e4m3fn``.

    The explicit clamp makes saturation independent of the device's cast (some casts give NaN
    above 448).
    """
    return x.float().clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)


def quantize_fp8_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per expert.

    Parameters
    ----------
    w : [E, N, K] float

    Returns
    -------
    data : [E, N, K] float8_e4m3fn
    scale : [E] float32
    """
    w = w.float()
    scale = safe_scale(w.abs().amax(dim=(1, 2)), FP8_E4M3_MAX)
    return to_e4m3(w / scale[:, None, None]), scale


def dequantize_fp8_per_tensor(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[E, N, K]`` e4m3 times ``[E]`` scales -> ``[E, N, K]`` float32."""
    return data.float() * scale.float()[:, None, None]


def quantize_fp8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per output row.

    Parameters
    ----------
    w : [E, N, K] float (any ``[..., K]`` works: one scale per row of K)

    Returns
    -------
    data : [E, N, K] float8_e4m3fn
    scale : [E, N] float32
    """
    w = w.float()
    scale = safe_scale(w.abs().amax(dim=-1), FP8_E4M3_MAX)
    return to_e4m3(w / scale[..., None]), scale


def dequantize_fp8_per_channel(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[E, N, K]`` e4m3 times ``[E, N]`` scales -> ``[E, N, K]`` float32."""
    return data.float() * scale.float()[..., None]


def quantize_fp8_block(w: torch.Tensor, block: tuple[int, int] = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per ``block[0] x block[1]`` block (partial blocks at the edges are allowed).

    Parameters
    ----------
    w : [E, N, K] float

    Returns
    -------
    data : [E, N, K] float8_e4m3fn
    scale : [E, ceil(N/bn), ceil(K/bk)] float32
    """
    bn, bk = block
    _, n, k = w.shape
    scale = safe_scale(block_amax(w, bn, bk), FP8_E4M3_MAX)
    return to_e4m3(w.float() / expand_blocks(scale, bn, bk, n, k)), scale


def dequantize_fp8_block(data: torch.Tensor, scale: torch.Tensor, block: tuple[int, int] = BLOCK) -> torch.Tensor:
    """``[E, N, K]`` e4m3 times ``[E, ceil(N/bn), ceil(K/bk)]`` scales -> ``[E, N, K]`` float32."""
    _, n, k = data.shape
    return data.float() * expand_blocks(scale.float(), block[0], block[1], n, k)


def quantize_fp8_static(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Activations ``[..., K]`` with a given (calibrated) scalar scale -> e4m3 ``[..., K]``.

    The scale is moved to ``x``'s device first: CUDA divides by a CPU scalar as a multiplication by
    its reciprocal, which can differ in the last bit.
    """
    return to_e4m3(x.float() / scale.float().reshape(()).to(x.device))


def quantize_fp8_per_tensor_dynamic(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[..., K]`` with one scale from their own amax -> (e4m3 ``[..., K]``, 0-D float32)."""
    x = x.float()
    scale = safe_scale(amax_all(x), FP8_E4M3_MAX)
    return to_e4m3(x / scale), scale


def quantize_fp8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[..., K]``, one scale per token -> (e4m3 ``[..., K]``, float32 ``[..., 1]``)."""
    x = x.float()
    scale = safe_scale(x.abs().amax(dim=-1, keepdim=True), FP8_E4M3_MAX)
    return to_e4m3(x / scale), scale


def quantize_fp8_per_token_group(x: torch.Tensor, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[..., K]``, one scale per token and ``group_size`` channels.

    Returns
    -------
    q : [..., K] float8_e4m3fn
    scale : [..., ceil(K/group_size)] float32
    """
    x = x.float()
    scale = safe_scale(split_groups(x, group_size).abs().amax(dim=-1), FP8_E4M3_MAX)
    return to_e4m3(div_groups(x, scale, group_size)), scale


def dequantize_fp8_per_token_group(q: torch.Tensor, scale: torch.Tensor, group_size: int = 128) -> torch.Tensor:
    """``[..., K]`` e4m3 times ``[..., ceil(K/g)]`` scales -> ``[..., K]`` float32."""
    return mul_groups(q.float(), scale.float(), group_size)

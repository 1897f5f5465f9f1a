"""Grouped integer weights: int4 (``int4_w4a16``, ``w4a8_int8``, ``w4a8_fp8``) and int8
(``int8_w8a16_group``), group size g in {32, 64, 128}, symmetric or with zero points.

Storage (E experts, N output rows, K input elements; one scale per g consecutive elements along K,
``G = ceil(K/g)``; a trailing partial group is quantized as if zero-padded):

- scales: float32 ``[E, N, G]``, the dequantization multiplier.
- int4 values: unsigned 4-bit codes ``u`` in [0, 15], packed two per byte along K, the even
  element in the low nibble (``byte[j] = u[2j] | u[2j+1] << 4``), uint8 ``[E, N, K/2]`` (K even).
  This is the GPTQ/AWQ "uint4 with offset" convention, one row of K per output channel (no
  GPTQ 8-per-int32 packing, no AWQ column interleave; backends that want those convert).

  * symmetric: ``u = q + 8`` with ``q = clamp(round(x / s), -8, 7)``, ``s = amax / 7``;
    ``x ~= (u - 8) * s``.
  * asymmetric (``_zp``): zero points uint8 ``[E, N, G]`` (one per byte, not packed), with
    ``s = (max(x, 0) - min(x, 0)) / 15``, ``z = clamp(round(-min(x, 0) / s), 0, 15)``,
    ``u = clamp(round(x / s) + z, 0, 15)``; ``x ~= (u - z) * s``. Zero is exact.

- int8 values: ``int8`` ``[E, N, K]``.

  * symmetric: ``q = clamp(round(x / s), -128, 127)``, ``s = amax / 127``; ``x ~= q * s``.
  * asymmetric: unsigned codes ``u = clamp(round(x / s) + z, 0, 255)`` with ``s = (max - min) / 255``,
    ``z`` uint8 ``[E, N, G]``; stored as ``q = u - 128`` so the canonical dtype stays int8;
    ``x ~= (q + 128 - z) * s``.

Rounding is half to even (``torch.round``). A group whose scale would be 0 gets scale 1.0.
"""

from __future__ import annotations

import torch

from moe_oracle.quant._common import (
    lookup_nibbles,
    merge_groups,
    pack_nibbles,
    safe_scale,
    split_groups,
)


def _code_range(bits: int) -> int:
    """Largest unsigned code: 15 for int4, 255 for int8."""
    return (1 << bits) - 1


def quantize_int_grouped(w: torch.Tensor, *, bits: int, group_size: int,
                         symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Quantize weights with one scale (and zero point) per group of K.

    Parameters
    ----------
    w : [E, N, K] float; K even for ``bits=4``
    bits : 4 or 8
    group_size : elements per scale along K
    symmetric : no zero points if True

    Returns
    -------
    data : [E, N, K/2] uint8 (int4, packed) or [E, N, K] int8
    scale : [E, N, ceil(K/g)] float32
    zero_point : [E, N, ceil(K/g)] uint8, or None when symmetric
    """
    k = w.shape[-1]
    wg = split_groups(w.float(), group_size)  # [E, N, G, g]
    umax = _code_range(bits)
    if symmetric:
        half = 1 << (bits - 1)  # 8 for int4, 128 for int8
        scale = safe_scale(wg.abs().amax(dim=-1), half - 1)
        q = torch.round(wg / scale[..., None]).clamp(-half, half - 1)
        codes = q + half  # unsigned offset codes in [0, umax]
        zero_point = None
    else:
        lo = wg.amin(dim=-1).clamp(max=0)
        hi = wg.amax(dim=-1).clamp(min=0)
        scale = safe_scale(hi - lo, umax)
        zero = torch.round(-lo / scale).clamp(0, umax)
        codes = (torch.round(wg / scale[..., None]) + zero[..., None]).clamp(0, umax)
        zero_point = zero.to(torch.uint8)
    codes = merge_groups(codes, k)
    data = pack_nibbles(codes.to(torch.uint8)) if bits == 4 else (codes - 128).to(torch.int8)
    return data, scale, zero_point


def dequantize_int_grouped(data: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, *,
                           bits: int, group_size: int) -> torch.Tensor:
    """Inverse of the storage format above.

    Parameters
    ----------
    data : [E, N, K/2] uint8 (int4) or [E, N, K] int8
    scale : [E, N, ceil(K/g)] float32
    zero_point : [E, N, ceil(K/g)] uint8, or None for symmetric weights

    Returns
    -------
    [E, N, K] float32
    """
    if bits == 4:  # unsigned codes 0..15, unpacked and converted in one lookup
        codes = lookup_nibbles(data, torch.arange(16, dtype=torch.float32, device=data.device))
        zero = 8.0 if zero_point is None else zero_point.float()[..., None]
    else:  # int8: signed values, or unsigned codes stored minus 128 when there are zero points
        codes = data.float() + (128.0 if zero_point is not None else 0.0)
        zero = 0.0 if zero_point is None else zero_point.float()[..., None]
    k = codes.shape[-1]
    return merge_groups((split_groups(codes, group_size) - zero) * scale.float()[..., None], k)

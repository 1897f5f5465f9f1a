"""OCP Microscaling (MX v1.0): MXFP4 (e2m1 values) and MXFP8 (e4m3 values), one e8m0 scale per
32 consecutive elements along K.

Element formats (OCP MX spec, section 5):

- e2m1 (FP4): 1 sign, 2 exponent (bias 1), 1 mantissa bit; no inf/NaN. Codes 0..7 are
  ``0, 0.5, 1, 1.5, 2, 3, 4, 6``; codes 8..15 are the same with the sign bit (``0x8``) set.
  Quantization rounds to nearest, ties to even (the even code), and saturates at 6. The sign bit
  is the input's, as in an fp8 cast: -0.0 and negatives that round to zero give code 8 (-0).
- e4m3: ``float8_e4m3fn``, saturating at 448 (see ``fp8.py``).
- e8m0 (scale): an unsigned biased exponent, ``2 ** (code - 127)`` for codes 0..254; ``0xFF`` is
  NaN. No sign, no mantissa, no zero.

Scale choice (spec section 6.3): ``X = 2 ** (floor(log2(amax)) - emax_elem)`` with ``emax_elem``
2 for e2m1 (6 = 1.5 * 2**2) and 8 for e4m3 (448 = 1.75 * 2**8); the code is clamped to
[0, 254]; an all-zero block gets code 0. Elements are ``quantize(x / X)``, saturating.

Storage (E experts, N rows, K elements, ``G = ceil(K/32)``; a partial trailing block is quantized
as if zero-padded):

- MXFP4: e2m1 codes packed two per byte, the even element in the low nibble, uint8 ``[E, N, K/2]``
  (as gpt-oss checkpoints' ``*_blocks``); scales uint8 e8m0 ``[E, N, G]``.
- MXFP8: ``float8_e4m3fn`` ``[E, N, K]``; scales uint8 e8m0 ``[E, N, G]``.

Every function here works on any ``[..., K]``, so activations ``[M, K]`` use the same code.
"""

from __future__ import annotations

import torch

from moe_oracle.quant._common import div_groups, lookup_nibbles, mul_groups, pack_nibbles, split_groups
from moe_oracle.quant.fp8 import to_e4m3

MX_BLOCK = 32
E2M1_MAX = 6.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""Magnitudes of e2m1 codes 0..7 (codes 8..15 are their negatives)."""
E2M1_EMAX = 2
E4M3_EMAX = 8
E8M0_BIAS = 127
E8M0_NAN = 0xFF

# Midpoints between consecutive e2m1 magnitudes: boundary i lies between codes i and i + 1.
_E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def encode_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round ``x`` (float ``[...]``) to the nearest e2m1 value, ties to even, saturating at 6.

    Returns uint8 codes ``[...]`` in 0..15 (bit 3 is the sign). The magnitude code counts the
    midpoints below ``|x|``; a midpoint itself (a tie) counts only when the code above it is even.
    Seven compare-and-add passes keep memory at about one byte per element beyond ``|x|``.
    """
    x = x.float()
    mag = x.abs()
    code = torch.zeros_like(mag, dtype=torch.uint8)
    for i, midpoint in enumerate(_E2M1_MIDPOINTS):
        code += (mag >= midpoint) if (i + 1) % 2 == 0 else (mag > midpoint)
    return code | (torch.signbit(x).to(torch.uint8) << 3)


def _e2m1_table(device: torch.device) -> torch.Tensor:
    """float32 ``[16]``: the value of each code, from its bit fields (exponent ``e``, mantissa ``m``):
    ``m * 0.5`` when ``e == 0``, else ``(2 + m) * 2 ** (e - 2)``.

    Computed on ``device`` rather than copied from the host, so it can run in a captured CUDA graph.
    """
    c = torch.arange(16, dtype=torch.int32, device=device)
    exp, man = (c >> 1) & 0x3, (c & 0x1).float()
    magnitude = torch.where(exp == 0, man * 0.5, torch.ldexp(man + 2, exp - 2))
    return torch.where((c & 0x8) != 0, -magnitude, magnitude)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``[...]`` in 0..15 -> float32 values ``[...]``."""
    table = _e2m1_table(codes.device)
    return table.index_select(0, codes.reshape(-1).to(torch.int32)).reshape(codes.shape)


def decode_e2m1_packed(packed: torch.Tensor) -> torch.Tensor:
    """Packed e2m1 ``[..., K/2]`` uint8 (low nibble first) -> float32 values ``[..., K]``."""
    return lookup_nibbles(packed, _e2m1_table(packed.device))


def decode_e8m0(codes: torch.Tensor) -> torch.Tensor:
    """uint8 e8m0 codes ``[...]`` -> float32 ``2 ** (code - 127)`` ``[...]``, NaN for 0xFF.

    Built from the float32 bit pattern, so every power of two is exact (code 0 is the float32
    subnormal 2**-127).
    """
    c = codes.to(torch.int32)
    normal = (c << 23).view(torch.float32)
    value = torch.where(c == 0, torch.full_like(normal, 2.0 ** -127), normal)
    return torch.where(c == E8M0_NAN, torch.full_like(value, float("nan")), value)


def mx_scale_codes(amax: torch.Tensor, emax_elem: int) -> torch.Tensor:
    """e8m0 codes (uint8 ``[...]``) for blocks with float ``amax`` ``[...]``: floor(log2(amax)) - emax_elem + 127.

    ``torch.frexp`` gives the exact exponent (``amax = m * 2**e``, ``m`` in [0.5, 1)), so
    ``floor(log2(amax)) = e - 1`` with no log rounding. All-zero blocks get code 0.
    """
    _, exp = torch.frexp(amax.float())
    code = (exp - 1 - emax_elem + E8M0_BIAS).clamp(0, 254)
    return torch.where(amax > 0, code, torch.zeros_like(code)).to(torch.uint8)


def _quantize_mx(x: torch.Tensor, emax_elem: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., K]`` -> (``x / X`` ``[..., K]`` float32, e8m0 codes ``[..., ceil(K/32)]``)."""
    x = x.float()
    codes = mx_scale_codes(split_groups(x, MX_BLOCK).abs().amax(dim=-1), emax_elem)
    return div_groups(x, decode_e8m0(codes), MX_BLOCK), codes


def quantize_mxfp4(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MXFP4-quantize ``x`` ``[..., K]`` float (K even).

    Returns
    -------
    data : [..., K/2] uint8, two e2m1 codes per byte, low nibble first
    scale : [..., ceil(K/32)] uint8 e8m0
    """
    scaled, codes = _quantize_mx(x, E2M1_EMAX)
    return pack_nibbles(encode_e2m1(scaled)), codes


def dequantize_mxfp4(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[..., K/2]`` packed e2m1 with ``[..., ceil(K/32)]`` e8m0 scales -> ``[..., K]`` float32."""
    return mul_groups(decode_e2m1_packed(data), decode_e8m0(scale), MX_BLOCK)


def quantize_mxfp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MXFP8-quantize ``x`` ``[..., K]`` float.

    Returns
    -------
    data : [..., K] float8_e4m3fn
    scale : [..., ceil(K/32)] uint8 e8m0
    """
    scaled, codes = _quantize_mx(x, E4M3_EMAX)
    return to_e4m3(scaled), codes


def dequantize_mxfp8(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[..., K]`` e4m3 with ``[..., ceil(K/32)]`` e8m0 scales -> ``[..., K]`` float32."""
    return mul_groups(data.float(), decode_e8m0(scale), MX_BLOCK)

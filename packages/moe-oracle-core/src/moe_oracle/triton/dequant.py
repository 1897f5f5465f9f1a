"""In-register weight dequantization for the mixed-input grouped GEMM (``gemm.py``, ``W_FORMAT != 0``).

The weights stay packed in memory in their canonical layout (DESIGN.md's table; the Triton backends
convert nothing): one ``[BLOCK_N, BLOCK_K / PACK]`` tile of bytes is loaded per K step (K contiguous,
so the loads vectorize), decoded to float32, scaled per group along K and cast to the activation
dtype just before the MMA. Every decode is integer bit arithmetic, so it needs no fp8/fp4 hardware
(Ampere, ROCm without fp8, the interpreter) and is exact:

- ``W_INT4``: unsigned nibbles ``u`` (low nibble = even k), ``(u + B_OFFSET - zero_point) * scale``
  (symmetric: ``B_OFFSET = -8``, no zero point).
- ``W_E2M1``: e2m1 nibbles (mxfp4, nvfp4): sign, 2 exponent bits, 1 mantissa bit.
- ``W_INT8``: int8 values, ``(q + B_OFFSET - zero_point) * scale`` (asymmetric: ``B_OFFSET = 128``).
- ``W_E4M3``: ``float8_e4m3fn`` bytes (fp8 weights at higher activation precision).

Scales per group of ``GROUP_K`` along K (``W_SCALE``): float32 (``S_F32``), e8m0 codes (``S_E8M0``,
mxfp4), e4m3 bytes (``S_E4M3``, nvfp4; its per-expert global scale is applied in the epilogue), or
none in the loop (``S_NONE``: per-tensor and per-channel scales go to the epilogue). A tile holds
``GT = max(1, BLOCK_K // GROUP_K)`` groups; with ``BLOCK_K <= GROUP_K`` the launcher makes
``BLOCK_K`` divide ``GROUP_K``.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Weight element formats (constexpr ``W_FORMAT``); 0 is the legacy "as stored" path of gemm.py.
W_STORED, W_INT4, W_E2M1, W_INT8, W_E4M3 = 0, 1, 2, 3, 4
# In-loop scale formats (constexpr ``W_SCALE``).
S_NONE, S_F32, S_E8M0, S_E4M3 = 0, 1, 2, 3
PACKED_FORMATS = (W_INT4, W_E2M1)


@triton.jit
def _decode_e2m1(c):
    """int32 e2m1 codes 0..15 -> float32: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6, bit 3 the sign."""
    e = (c >> 1) & 3
    m = c & 1
    twice = tl.where(e == 0, m, (2 + m) << tl.maximum(e - 1, 0))  # 2 * |value|: 0 1 2 3 4 6 8 12
    v = twice.to(tl.float32) * 0.5
    return tl.where((c & 8) != 0, -v, v)


@triton.jit
def _decode_e4m3(b):
    """int32 ``float8_e4m3fn`` bit patterns 0..255 -> float32 (bias 7, subnormals exact, 0x7F/0xFF NaN)."""
    e = (b >> 3) & 0xF
    m = b & 7
    normal = (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    v = tl.where(e == 0, m.to(tl.float32) * 0.001953125, normal)  # subnormal: m * 2^-9
    v = tl.where((b & 0x7F) == 0x7F, float("nan"), v)
    return tl.where((b & 0x80) != 0, -v, v)


@triton.jit
def _decode_e8m0(s):
    """int32 e8m0 codes -> float32 ``2 ** (s - 127)``; code 0 is 2^-127 (a float32 subnormal), 0xFF NaN."""
    v = tl.where(s == 0, (s * 0 + (1 << 22)).to(tl.float32, bitcast=True), (s << 23).to(tl.float32, bitcast=True))
    return tl.where(s == 255, float("nan"), v)


@triton.jit
def _decode_scale(s, W_SCALE: tl.constexpr):
    if W_SCALE == 2:
        return _decode_e8m0(s.to(tl.int32))
    elif W_SCALE == 3:
        return _decode_e4m3(s.to(tl.int32))
    else:
        return s.to(tl.float32)


@triton.jit
def _scale_groups(v, s, z, HAS_ZP: tl.constexpr, B_OFFSET: tl.constexpr, W_SCALE: tl.constexpr,
                  BLOCK_N: tl.constexpr, COLS: tl.constexpr, GT: tl.constexpr):
    """``v`` [BLOCK_N, COLS] float32 values of one half (or all) of a K tile, ``s``/``z`` [BLOCK_N, GT]:
    ``(v + B_OFFSET - z) * s`` group by group along the columns."""
    if B_OFFSET != 0.0:
        v = v + B_OFFSET
    if W_SCALE != 0 or HAS_ZP:
        g = tl.reshape(v, (BLOCK_N, GT, COLS // GT))
        if HAS_ZP:
            g = g - z.to(tl.float32)[:, :, None]
        if W_SCALE != 0:
            g = g * s[:, :, None]
        v = tl.reshape(g, (BLOCK_N, COLS))
    return v


@triton.jit
def load_weight_tile(w_ptrs, s_ptrs, z_ptrs, kb_mask, g_mask,
                     W_FORMAT: tl.constexpr, W_SCALE: tl.constexpr, HAS_ZP: tl.constexpr, B_OFFSET: tl.constexpr,
                     EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GT: tl.constexpr,
                     dtype: tl.constexpr):
    """One dequantized weight tile ``[BLOCK_K, BLOCK_N]`` in ``dtype``, ready for ``tl.dot``.

    w_ptrs : [BLOCK_N, BLOCK_K / PACK] pointers to the stored bytes (PACK 2 for 4-bit formats).
    s_ptrs, z_ptrs : [BLOCK_N, GT] pointers to this tile's group scales and zero points.
    kb_mask : [BLOCK_K / PACK] valid bytes along K (used unless ``EVEN_K``); g_mask : [GT] valid groups.
    Masked bytes and scales load as 0, so a partial tile's tail is exactly zero (never NaN).
    """
    if EVEN_K:  # noqa: SIM108  (constexpr branches compile to one load; keep them statements)
        p = tl.load(w_ptrs)
    else:
        p = tl.load(w_ptrs, mask=kb_mask[None, :], other=0)
    s = None
    z = None
    if W_SCALE != 0:
        if EVEN_K:
            s = _decode_scale(tl.load(s_ptrs), W_SCALE)
        else:
            s = _decode_scale(tl.load(s_ptrs, mask=g_mask[None, :], other=0), W_SCALE)
    if HAS_ZP:
        if EVEN_K:  # noqa: SIM108  (constexpr branch)
            z = tl.load(z_ptrs)
        else:
            z = tl.load(z_ptrs, mask=g_mask[None, :], other=0)
    if W_FORMAT == 1 or W_FORMAT == 2:  # two 4-bit codes a byte: low nibble = even k
        c = p.to(tl.int32)
        lo = c & 0xF
        hi = (c >> 4) & 0xF
        if W_FORMAT == 2:
            lo_v = _decode_e2m1(lo)
            hi_v = _decode_e2m1(hi)
        else:
            lo_v = lo.to(tl.float32)
            hi_v = hi.to(tl.float32)
        # Both nibbles of a byte lie in the same group (GROUP_K is even): scale each half alike.
        lo_v = _scale_groups(lo_v, s, z, HAS_ZP, B_OFFSET, W_SCALE, BLOCK_N, BLOCK_K // 2, GT)
        hi_v = _scale_groups(hi_v, s, z, HAS_ZP, B_OFFSET, W_SCALE, BLOCK_N, BLOCK_K // 2, GT)
        w = tl.reshape(tl.join(lo_v.to(dtype), hi_v.to(dtype)), (BLOCK_N, BLOCK_K))
    else:
        if W_FORMAT == 4:  # noqa: SIM108  (constexpr branch)
            v = _decode_e4m3(p.to(tl.int32))
        else:
            v = p.to(tl.float32)
        w = _scale_groups(v, s, z, HAS_ZP, B_OFFSET, W_SCALE, BLOCK_N, BLOCK_K, GT).to(dtype)
    return tl.trans(w)

"""Quantized experts as the vector kernels read them (``moe_gemm_vec.c``): code panels plus float32
scales (and zero points) per group of K, so every scheme is one formula, ``(value(code) - zero) * scale``.

Per projection (``w13`` ``[E_l, N, H]`` or ``w2`` ``[E_l, H, I]`` canonical, K its input size):

- codes ``[E_l, N/64, K, 64]`` (int8 as int8, fp8 e4m3 as its uint8 bits) or, for packed 4-bit
  schemes, the canonical bytes ``[E_l, N/64, K/2, 64]`` (two codes per byte, k even in the low nibble);
- scale float32 ``[E_l, N/64, G, 64]``, one row per ``group`` k steps: per-tensor and per-channel
  scales are one group of K, 128x128 blocks are expanded to rows (group 128), groups, mx (e8m0, 32)
  and nvfp4 (e4m3, 16, times the expert's global scale) as they come;
- zero float32 alike for ``_zp`` schemes (int8 with zero points stores ``u - 128``, so its zero is
  ``z - 128``); else the constant ``offset`` (8 for symmetric int4 codes, 0 otherwise).

With ``gate_up`` every tensor's rows are reordered as ``native.pack`` does (32 gate rows, then their
32 up rows, per panel), for the silu epilogue. The canonical tensors stay the layer's record (``converter.to_canonical``).
"""

from __future__ import annotations

import torch

from moe_oracle.plugin import MoEConfig, QuantKey, decode_e8m0, interleave_gate_up
from moe_oracle_cpu.cpu_grouped import native

# Canonical weight dtype name -> the kernels' code format.
_FORMATS = {"int8": native.FMT_I8, "fp8_e4m3": native.FMT_E4M3, "int4": native.FMT_U4, "fp4_e2m1": native.FMT_E2M1}


def _panelize(t: torch.Tensor, gate_up: bool) -> torch.Tensor:
    """``[E, N, X]`` -> ``[E, N/64, X, 64]`` (rows interleaved first with ``gate_up``), contiguous."""
    if gate_up:
        t = interleave_gate_up(t, block=native.PANEL // 2)
    e, n, x = t.shape
    return t.reshape(e, n // native.PANEL, native.PANEL, x).transpose(2, 3).contiguous()


def _rows_of_scales(key: QuantKey, scale: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, int]:
    """Canonical scales -> float32 ``[E, N, G]`` and the group size along K."""
    s = scale.float() if key.scale_dtype != "e8m0" else decode_e8m0(scale)
    kind = key.granularity.kind
    if kind == "tensor":
        return s[:, None, None].expand(-1, n, 1), k
    if kind == "channel":
        return s[:, :, None], k
    if kind == "block":
        bn, bk = key.granularity.shape
        return s.repeat_interleave(bn, dim=1)[:, :n], bk
    return s, key.granularity.shape[0]


def pack_quantized(config: MoEConfig, build: str, data: torch.Tensor, scale: torch.Tensor,
                   zero_point: torch.Tensor | None, global_scale: torch.Tensor | None, *,
                   gate_up: bool = False) -> native.Panels:
    """One projection's canonical quantized tensors (``moe_oracle.kernel.canonical``) -> ``Panels``
    for a vector build. New tensors; the inputs are not modified."""
    key = config.scheme.weight
    assert key is not None
    packed = key.dtype in ("int4", "fp4_e2m1")
    n, k = data.shape[1], data.shape[2] * (2 if packed else 1)
    s, group = _rows_of_scales(key, scale, n, k)
    if global_scale is not None:
        s = s * global_scale.float()[:, None, None]
    codes = data.view(torch.uint8) if data.dtype == torch.float8_e4m3fn else data
    zero = None
    offset = 8.0 if key.dtype == "int4" else 0.0
    if zero_point is not None:
        zero = _panelize(zero_point.float() - (128.0 if key.dtype == "int8" else 0.0), gate_up)
        offset = 0.0
    return native.Panels(build, _FORMATS[key.dtype], _panelize(codes, gate_up), _panelize(s, gate_up), zero,
                         offset, group)

"""INT8 with per-channel weights (w8a8, w8a16) and per-token dynamic activations (w8a8, w4a8).

Storage: values ``int8`` ``[E, N, K]``, symmetric (no zero point): ``q = clamp(round(x / s), -128, 127)``
with round half to even, and ``x ~= q * s``. Scales are float32 ``s = amax / 127`` (1.0 where amax
is 0): per output channel ``[E, N]`` for weights, per token ``[..., 1]`` for activations ``[..., K]``.
Grouped int8 weights (``int8_w8a16_group``) live in ``intn.py``.
"""

from __future__ import annotations

import torch

from moe_oracle.quant._common import safe_scale

INT8_MAX = 127.0


def round_to_int8(x: torch.Tensor) -> torch.Tensor:
    """Round half to even and saturate to [-128, 127]; ``x`` float ``[...]`` -> int8 ``[...]``."""
    return torch.round(x).clamp(-128, 127).to(torch.int8)


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per output row.

    Parameters
    ----------
    w : [E, N, K] float (any ``[..., K]``: one scale per row of K)

    Returns
    -------
    data : [E, N, K] int8
    scale : [E, N] float32
    """
    w = w.float()
    scale = safe_scale(w.abs().amax(dim=-1), INT8_MAX)
    return round_to_int8(w / scale[..., None]), scale


def dequantize_int8_per_channel(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[E, N, K]`` int8 times ``[E, N]`` scales -> ``[E, N, K]`` float32."""
    return data.float() * scale.float()[..., None]


def quantize_int8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[..., K]``, one dynamic scale per token -> (int8 ``[..., K]``, float32 ``[..., 1]``).

    int8 has no NaN, so a token holding a NaN gets a NaN scale: it dequantizes to a NaN row instead
    of a finite, wrong one (kernels multiply the scale into their int32 accumulators, so it stays NaN).
    """
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True)                                 # NaN where the row has one
    scale = torch.where(amax.isnan(), amax, safe_scale(amax, INT8_MAX))
    return round_to_int8(torch.nan_to_num(x / scale, nan=0.0)), scale

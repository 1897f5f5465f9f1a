"""What a dispatcher sends for each token's activations: the compute dtype, or, where the scheme
quantizes activations dynamically per token (or per token and channel group), the quantized codes
and their scales, quantized once on the sending rank.

    fp8_block (per token, per 128 channels)  e4m3 [N, H] + float32 [N, H/128]   H + 4*H/128 bytes
    fp8_channel (per token)                  e4m3 [N, H] + float32 [N, 1]       H + 4 bytes
    int8_w8a8, w4a8_int8 (per token)         int8 [N, H] + float32 [N, 1]       H + 4 bytes
    anything else                            config.dtype [N, H]                H * element size

The receiver dequantizes into ``config.dtype``, because ``Experts.apply`` takes the compute dtype;
the experts' own quantization of those rows then gives back the same codes (a code times its
scale, divided by the scale recomputed from the row's amax, rounds to the code again), so the wire
format changes bytes, not results. Per-tensor dynamic scales (``fp8_tensor``) depend on every row
of the tensor the kernel quantizes, which differs per rank: they travel unquantized.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig

Layout = tuple[tuple[int, ...], torch.dtype]


def wire_quantization(config: MoEConfig) -> str | None:
    """``"fp8_group"``, ``"fp8_token"``, ``"int8_token"`` or ``None`` (send the compute dtype)."""
    key = config.scheme.activation
    if key is None or key.static or key.global_scale or key.scale_dtype != "fp32":
        return None
    kind = key.granularity.kind
    if key.dtype == "int8" and kind == "token":
        return "int8_token"
    if key.dtype == "fp8_e4m3" and kind in ("token", "group"):
        return f"fp8_{kind}"
    return None


def layout(config: MoEConfig) -> list[Layout]:
    """The parts of one token's wire row."""
    h = config.hidden_size
    fmt = wire_quantization(config)
    if fmt is None:
        return [((h,), config.dtype)]
    if fmt == "fp8_group":
        g = config.scheme.activation.granularity.shape[0]  # type: ignore[union-attr]
        return [((h,), torch.float8_e4m3fn), ((-(-h // g),), torch.float32)]
    return [((h,), torch.float8_e4m3fn if fmt == "fp8_token" else torch.int8), ((1,), torch.float32)]


def encode(config: MoEConfig, hidden: torch.Tensor) -> list[torch.Tensor]:
    """``hidden`` ``[N, H]`` -> the wire parts of ``layout(config)``."""
    if wire_quantization(config) is None:
        return [hidden]
    from moe_oracle.quant import quantize_activation

    q, scale = quantize_activation(config.scheme, hidden)
    assert scale is not None
    width = layout(config)[1][0][0]
    return [q, scale.reshape(hidden.shape[0], width)]


def decode(config: MoEConfig, parts: list[torch.Tensor]) -> torch.Tensor:
    """The wire parts -> ``[N, H]`` in ``config.dtype``."""
    fmt = wire_quantization(config)
    if fmt is None:
        return parts[0]
    q, scale = parts
    if fmt == "fp8_group":
        from moe_oracle.quant.fp8 import dequantize_fp8_per_token_group

        g = config.scheme.activation.granularity.shape[0]  # type: ignore[union-attr]
        return dequantize_fp8_per_token_group(q, scale, g).to(config.dtype)
    return (q.float() * scale).to(config.dtype)

"""The one place flashinfer is imported: lazily, on the first kernel call, never at import time."""

from __future__ import annotations

from types import ModuleType

import torch


def fused_moe_module() -> ModuleType:
    """``flashinfer.fused_moe``; ``ImportError`` saying how to install it when it is absent."""
    try:
        import flashinfer.fused_moe as fused_moe
    except ImportError as exc:
        raise ImportError(f"the FlashInfer MoE backends need flashinfer (pip install flashinfer-python): {exc}") from exc
    return fused_moe


def enum_value(module: ModuleType, enum: str, member: str) -> int:
    """``int(module.<enum>.<member>)``, e.g. ``enum_value(fm, "ActivationType", "Swiglu")``."""
    return int(getattr(getattr(module, enum), member))


def first_output(result: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The finalized ``[T, H]`` output: TRTLLM entry points return it alone or first in a list."""
    return result[0] if isinstance(result, (list, tuple)) else result


def pack_topk(topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
    """``[T, K]`` ids and weights -> the routed TRTLLM kernels' ``[T, K]`` int32
    ``(expert_id << 16) | bits(bf16(weight))``."""
    bits = topk_weights.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF
    return (topk_ids.to(torch.int32) << 16) | bits

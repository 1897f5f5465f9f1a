"""The one place flashinfer is imported: lazily, on the first kernel call, never at import time."""

from __future__ import annotations

from types import ModuleType

import torch

from moe_oracle.plugin import FLOAT_DTYPES, INDEX_DTYPES, InputError, check_tensor, load_library


def fused_moe_module() -> ModuleType:
    """``flashinfer.fused_moe``; ``ImportError`` saying how to install it when it is absent."""
    return load_library("flashinfer.fused_moe", backend="FlashInfer MoE (flashinfer_cutlass, flashinfer_trtllm)",
                        install="flashinfer (pip install flashinfer-python)")


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


def check_routed_args(*, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                      expert_num_tokens: torch.Tensor | None, hidden_size: int, top_k: int, dtype: torch.dtype,
                      who: str) -> None:
    """Shapes, dtypes and devices of the routed kernels' arguments, with no device sync (ids are not
    range-checked: that reads values back, and these calls must stay capturable in a CUDA graph).
    ``hidden_size`` is the caller's H, before any padding."""
    if expert_num_tokens is not None:
        raise InputError("expert_num_tokens", f"None ({who} takes the standard format)", "a tensor")
    check_tensor("hidden", hidden, ("T", hidden_size), (dtype,))
    t, device = hidden.shape[0], hidden.device
    check_tensor("topk_weights", topk_weights, (t, top_k), FLOAT_DTYPES, device)
    check_tensor("topk_ids", topk_ids, (t, top_k), INDEX_DTYPES, device)

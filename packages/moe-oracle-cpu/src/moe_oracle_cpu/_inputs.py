"""Forward-input validation shared by the CPU experts: one ``InputError`` naming argument, expected, got."""

from __future__ import annotations

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.errors import InputError

INDEX_DTYPES = (torch.int32, torch.int64)


def check_inputs(config: MoEConfig, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                 expert_map: torch.Tensor | None, expert_num_tokens: torch.Tensor | None) -> None:
    """Check the standard-format ``apply`` arguments (shapes in ``ExpertsModular.apply``)."""
    if expert_num_tokens is not None:
        raise InputError("expert_num_tokens", "None (CPU experts take the standard format)", "a tensor")
    check_tensor("hidden", hidden, ("T", config.hidden_size), (config.dtype,))
    t = hidden.shape[0]
    check_tensor("topk_weights", topk_weights, (t, config.top_k), (torch.float32,))
    check_tensor("topk_ids", topk_ids, (t, config.top_k), INDEX_DTYPES)
    for name, tensor in (("hidden", hidden), ("topk_weights", topk_weights), ("topk_ids", topk_ids),
                         ("expert_map", expert_map)):
        if tensor is not None and tensor.device.type != "cpu":
            raise InputError(name, "a CPU tensor", f"device {tensor.device}")
    if expert_map is not None:
        check_tensor("expert_map", expert_map, (config.num_experts,), INDEX_DTYPES)
        check_range("expert_map", expert_map, -1, config.num_local_experts,
                    "local ids, or -1 for another rank's expert")
        check_range("topk_ids", topk_ids, 0, config.num_experts, "global expert ids")
    else:
        check_range("topk_ids", topk_ids, 0, config.num_local_experts, "expert ids (no expert_map: all local)")


def check_tensor(name: str, t: object, shape: tuple[int | str, ...], dtypes: tuple[torch.dtype, ...]) -> None:
    """``shape`` entries that are strings (``"T"``) match any size."""
    want = "[" + ", ".join(map(str, shape)) + "]"
    if not isinstance(t, torch.Tensor):
        raise InputError(name, f"a tensor of shape {want}", type(t).__name__)
    if t.dim() != len(shape) or any(isinstance(s, int) and s != d for s, d in zip(shape, t.shape, strict=True)):
        raise InputError(name, f"shape {want}", f"shape {list(t.shape)}")
    if t.dtype not in dtypes:
        raise InputError(name, f"dtype {'/'.join(str(d).removeprefix('torch.') for d in dtypes)}",
                         f"dtype {str(t.dtype).removeprefix('torch.')}")


def check_range(name: str, t: torch.Tensor, low: int, high: int, what: str) -> None:
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < low or hi >= high:
        raise InputError(name, f"{what} in [{low}, {high})", f"values in [{lo}, {hi}]")

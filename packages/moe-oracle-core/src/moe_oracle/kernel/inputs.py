"""Validation of forward inputs, shared by the layer and by every experts class: one
``InputError`` naming the argument, what was expected and what came."""

from __future__ import annotations

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.errors import InputError

INDEX_DTYPES = (torch.int32, torch.int64)
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _names(dtypes: tuple[torch.dtype, ...]) -> str:
    return "/".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(name: str, t: object, shape: tuple[int | str, ...], dtypes: tuple[torch.dtype, ...],
                 device: torch.device | None = None) -> None:
    """``shape`` entries that are strings (``"T"``) match any size; ``device`` is checked when given."""
    want = "[" + ", ".join(map(str, shape)) + "]"
    if not isinstance(t, torch.Tensor):
        raise InputError(name, f"a tensor of shape {want}", type(t).__name__)
    if t.dim() != len(shape) or any(isinstance(s, int) and s != d for s, d in zip(shape, t.shape, strict=True)):
        raise InputError(name, f"shape {want}", f"shape {list(t.shape)}")
    if t.dtype not in dtypes:
        raise InputError(name, f"dtype {_names(dtypes)}", f"dtype {str(t.dtype).removeprefix('torch.')}")
    if device is not None and t.device != device:
        raise InputError(name, f"device {device}", f"device {t.device}")


def check_range(name: str, t: torch.Tensor, low: int, high: int, what: str) -> None:
    """Values in ``[low, high)``; reads two scalars back, so not for use inside graph capture."""
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < low or hi >= high:
        raise InputError(name, f"{what} in [{low}, {high})", f"values in [{lo}, {hi}]")


def check_routed_inputs(config: MoEConfig, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                        *, expert_map: torch.Tensor | None, expert_num_tokens: torch.Tensor | None,
                        who: str, check_values: bool = True) -> None:
    """The standard-format arguments of ``ExpertsModular.apply`` (shapes there); ``who`` names the
    experts in the message refusing the batched format. ``check_values=False`` skips the id range
    checks, which read values back to the host: GPU experts that must stay capturable in a CUDA
    graph skip them (``MoELayer`` checks ids before the kernel, outside capture)."""
    if expert_num_tokens is not None:
        raise InputError("expert_num_tokens", f"None ({who} take the standard format)", "a tensor")
    check_tensor("hidden", hidden, ("T", config.hidden_size), (config.dtype,))
    t, device = hidden.shape[0], hidden.device
    check_tensor("topk_weights", topk_weights, (t, config.top_k), (torch.float32,), device)
    check_tensor("topk_ids", topk_ids, (t, config.top_k), INDEX_DTYPES, device)
    e, e_local = config.num_experts, config.num_local_experts
    if expert_map is not None:
        check_tensor("expert_map", expert_map, (e,), INDEX_DTYPES, device)
    if not check_values:
        return
    if expert_map is not None:
        check_range("expert_map", expert_map, -1, e_local, "local ids, or -1 for another rank's expert")
        check_range("topk_ids", topk_ids, 0, e, "global expert ids")
    else:
        check_range("topk_ids", topk_ids, 0, e_local, "expert ids (no expert_map: all local)")

"""Forward-input validation of the CPU experts: core's routed-input checks plus "on the CPU"."""

from __future__ import annotations

import torch

from moe_oracle.plugin import InputError, MoEConfig, check_routed_inputs


def check_inputs(config: MoEConfig, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                 expert_map: torch.Tensor | None, expert_num_tokens: torch.Tensor | None, *,
                 check_values: bool = True) -> None:
    """Check the standard-format ``apply`` arguments (shapes in ``ExpertsModular.apply``);
    ``check_values=False`` leaves the id ranges to a caller that checks them as it reads them."""
    check_routed_inputs(config, hidden, topk_weights, topk_ids, expert_map=expert_map,
                        expert_num_tokens=expert_num_tokens, who="CPU experts", check_values=check_values)
    if hidden.device.type != "cpu":
        raise InputError("hidden", "a CPU tensor (CPU experts)", f"device {hidden.device}")

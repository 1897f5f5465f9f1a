"""Which of TRT-LLM-gen's in-kernel routing methods computes a config's router, if any.

The monolithic kernels take router logits and route inside (``RoutingMethodType``). Our
``RoutingConfig`` maps onto them as follows; anything else runs the routed (modular) kernels on
top-k ids computed by ``moe_oracle.router``:

- softmax over all experts, top-k, no renormalization: ``Default``;
- softmax, top-k, renormalized: ``RenormalizeNaive`` (Qwen3, Mixtral);
- top-k logits, softmax over them (gpt-oss): ``Renormalize`` (the same weights as the above);
- sigmoid plus score-correction bias, grouped top-k, renormalized (DeepSeek-V3): ``DeepSeekV3``,
  which alone takes the routed scaling factor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moe_oracle.plugin import MoEConfig


def routing_method(config: MoEConfig) -> str | None:
    """The ``RoutingMethodType`` member name for ``config``'s router, or ``None`` if none fits."""
    r = config.routing
    if r.scoring == "softmax" and not r.grouped and not r.score_correction_bias and r.routed_scaling_factor == 1.0:
        if r.softmax_after_topk:
            return "Renormalize"
        return "RenormalizeNaive" if r.renormalize else "Default"
    if r.scoring == "sigmoid" and r.score_correction_bias and r.grouped and r.renormalize:
        return "DeepSeekV3"
    return None


def uses_routed_kernel(config: MoEConfig) -> bool:
    """Routed (modular) kernels when tokens arrive through an all-to-all or no in-kernel router fits."""
    return config.parallel.use_all2all_kernels or routing_method(config) is None

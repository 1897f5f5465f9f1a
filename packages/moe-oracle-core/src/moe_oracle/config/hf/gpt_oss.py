"""gpt-oss: top-k of the logits, then softmax over those k; clamped SwiGLU experts with biases."""

from __future__ import annotations

from typing import Any

from moe_oracle.config.hf.keys import Family, Json, number
from moe_oracle.config.moe import GPT_OSS_SWIGLU_LIMIT
from moe_oracle.config.routing import RoutingConfig


def _routing(cfg: Json) -> RoutingConfig:
    """gpt-oss: top-k of the logits, then softmax over those k."""
    return RoutingConfig(softmax_after_topk=True)


def _activation(cfg: Json) -> dict[str, Any]:
    """gpt-oss experts: clamped SwiGLU (alpha 1.702, fixed in code) with biases; ``hidden_act`` is unused."""
    return {"activation": "swigluoai", "has_bias": True,
            "swiglu_limit": number(cfg, "swiglu_limit", GPT_OSS_SWIGLU_LIMIT)}


FAMILIES = (
    Family("gpt_oss", ("num_local_experts",), ("experts_per_token", "num_experts_per_tok"), ("intermediate_size",),
           _routing, _activation),
)

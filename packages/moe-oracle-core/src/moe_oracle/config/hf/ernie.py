"""Baidu ERNIE 4.5 MoE (``ernie4_5_moe``): softmax top-k chosen with a score-correction bias.

``Ernie4_5_MoeTopKRouter`` takes a softmax over all ``moe_num_experts`` logits, chooses the
``moe_k`` best of (probabilities + ``moe_statics.e_score_correction_bias``), weights them by the
unbiased probabilities and divides by their sum clamped below at ``moe_norm_min``: a renormalized
softmax with ``score_correction_bias``. The clamp never acts when ``moe_norm_min`` is at most
``moe_k / moe_num_experts`` (k probabilities chosen as the best hold at least that much); a
larger value is a ``ConfigError``. Experts are act(gate) * up of ``moe_intermediate_size`` with no
biases (``use_bias`` is for the other linears).

Outside this layer: the ``moe_num_shared_experts`` shared experts (one dense MLP of
``moe_intermediate_size * moe_num_shared_experts``) and the dense layers before
``moe_layer_start_index``, after ``moe_layer_end_index`` or off ``moe_layer_interval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_oracle.config.hf.keys import Family, Json, gated_hidden_act
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.config.validate import finite_float
from moe_oracle.errors import ConfigError


def _routing(cfg: Json) -> RoutingConfig:
    return RoutingConfig(renormalize=True, score_correction_bias=True)


def _check(cfg: Json, fields: Mapping[str, Any]) -> None:
    norm_min = cfg.get("moe_norm_min")
    if norm_min is None or "routing" not in fields:
        return
    norm_min = finite_float("moe_norm_min", norm_min)
    top_k, experts = fields.get("top_k"), fields.get("num_experts")
    if top_k is not None and experts is not None and norm_min > top_k / experts:
        raise ConfigError("moe_norm_min", f"{norm_min} exceeds moe_k / moe_num_experts = {top_k}/{experts}: the "
                          "router's clamp of the weights' sum would act, and RoutingConfig renormalizes unclamped")


FAMILIES = (
    Family("ernie4_5_moe", ("moe_num_experts", "num_experts"), ("moe_k", "num_experts_per_tok"),
           ("moe_intermediate_size",), _routing, gated_hidden_act, check=_check),
)

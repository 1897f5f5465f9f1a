"""Tencent Hunyuan MoE (``hunyuan_v1_moe``, Hunyuan-A13B): softmax top-k, renormalized.

``num_experts`` and ``moe_topk`` may be one value per layer; a ``MoEConfig`` is one layer, so
the values must agree (or ``num_experts=`` / ``top_k=`` pick the layer). transformers sizes the
experts by ``intermediate_size``; the original code read the per-layer ``moe_intermediate_size``,
which must therefore agree with it when present. The shared MLP (``num_shared_expert``, of
``intermediate_size``, added to every layer's output) is outside this layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_oracle.config.hf.keys import Family, Json, gated_hidden_act, softmax_renormalized, uniform
from moe_oracle.errors import ConfigError


def _check(cfg: Json, fields: Mapping[str, Any]) -> None:
    moe_size = cfg.get("moe_intermediate_size")
    if moe_size is None or "intermediate_size" not in fields:
        return
    moe_size = uniform("moe_intermediate_size", moe_size, target="intermediate_size")
    if moe_size != fields["intermediate_size"]:
        raise ConfigError("moe_intermediate_size", f"{moe_size} contradicts intermediate_size="
                          f"{fields['intermediate_size']}, which sizes the experts in transformers")


FAMILIES = (
    Family("hunyuan_v1_moe", ("num_experts", "num_local_experts"), ("moe_topk", "num_experts_per_tok"),
           ("intermediate_size",), softmax_renormalized, gated_hidden_act,
           per_layer=frozenset({"num_experts", "moe_topk"}), check=_check),
)

"""Llama 4 (the ``llama4_text`` config, inside a ``llama4`` file's ``text_config``).

``Llama4Router`` takes the top-k of the logits and weights each chosen expert by the sigmoid of
its logit, unnormalized: ``RoutingConfig(scoring="sigmoid", renormalize=False)`` chooses the same
experts (sigmoid is increasing) with the same weights. ``Llama4TextMoe`` multiplies each token's
input by its weight before the expert, not the expert's output after it, which is
``apply_router_weight_on_input``; a ``MoEConfig`` can express that with one expert per token
only (the published Scout and Maverick route to one), so another ``num_experts_per_tok`` is a
``ConfigError``. Experts are act(gate) * up of ``intermediate_size``.

Outside this layer: the shared expert (a dense MLP of ``intermediate_size`` added to every MoE
layer's output) and the dense layers between MoE layers (``interleave_moe_layer_step`` /
``moe_layers``; they use ``intermediate_size_mlp``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, Json, gated_hidden_act
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.errors import ConfigError


def _routing(cfg: Json) -> RoutingConfig:
    return RoutingConfig(scoring="sigmoid", renormalize=False)


def _activation(cfg: Json) -> dict[str, Any]:
    return {**gated_hidden_act(cfg), "apply_router_weight_on_input": True}


def _check(cfg: Json, fields: Mapping[str, Any]) -> None:
    top_k = fields.get("top_k")
    if fields.get("apply_router_weight_on_input") and top_k is not None and top_k != 1:
        raise ConfigError("num_experts_per_tok", f"Llama 4 scales each token's input by its router weight, which "
                          f"a MoEConfig expresses for 1 expert per token only, got {top_k}; pass "
                          "apply_router_weight_on_input=False only if the weights are applied after the experts")


FAMILIES = (
    Family("llama4_text", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), _routing, _activation,
           check=_check),
)

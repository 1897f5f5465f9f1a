"""IBM Granite MoE (granite-3.0 ... a400m / a800m): the softmax is over the top-k logits only.

``GraniteMoeTopKRouter`` takes the top-k of the logits, then a softmax over those k, which is
``RoutingConfig(softmax_after_topk=True)`` (the same weights as a renormalized softmax top-k).
The experts are act(gate) * up of ``intermediate_size`` with no biases. Granite's
``embedding_multiplier`` / ``residual_multiplier`` / ``attention_multiplier`` / ``logits_scaling``
act outside the MoE block. ``granitemoeshared`` adds a shared MLP of ``shared_intermediate_size``
beside the experts, outside this layer.
"""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, Json, gated_hidden_act
from moe_oracle.config.routing import RoutingConfig


def _routing(cfg: Json) -> RoutingConfig:
    return RoutingConfig(softmax_after_topk=True)


FAMILIES = (
    Family("granitemoe", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), _routing,
           gated_hidden_act),
    Family("granitemoeshared", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), _routing,
           gated_hidden_act),
)

"""Microsoft Phi-3.5-MoE (``phimoe``): the sizes read, the router does not.

``PhimoeSparseMoeBlock`` routes with *sparsemixer*: the best expert's weight is a softmax over
only the logits within ``2 * router_jitter_noise`` (relative) of the best, then the same again
for the second expert with the first masked. No ``RoutingConfig`` gives those weights, so
reading the router is a ``ConfigError`` naming ``router_jitter_noise``; ``routing=...`` overrides
it (the sizes are then read, and the routing is the caller's: e.g. route outside and call
``layer.forward_routed``).
"""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, Json, gated_hidden_act
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.errors import ConfigError


def _routing(cfg: Json) -> RoutingConfig:
    raise ConfigError("router_jitter_noise", "phimoe routes with sparsemixer (each expert's weight is a softmax over "
                      "the logits within 2 * router_jitter_noise of the best), which RoutingConfig cannot express; "
                      "pass routing=... to read the sizes and route outside the layer")


FAMILIES = (
    Family("phimoe", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), _routing, gated_hidden_act),
)

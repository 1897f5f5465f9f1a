"""Mixtral and MiniMax (Text-01, M1): softmax over all experts, top-k, renormalized; experts
sized by ``intermediate_size``.

MiniMax's ``mlp_alpha_factor`` / ``mlp_beta_factor`` scale the residual around the MoE block and
its lightning-attention layers are attention: both are outside this layer.

MiniMax-M2 (``minimax_m2``) routes on sigmoid scores instead: the choice adds the block's
``e_score_correction_bias``, the chosen unbiased scores are renormalized, unscaled.
"""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, Json, gated_hidden_act, softmax_renormalized
from moe_oracle.config.routing import RoutingConfig


def _minimax_m2_routing(cfg: Json) -> RoutingConfig:
    return RoutingConfig(scoring="sigmoid", renormalize=True, score_correction_bias=True)


FAMILIES = (
    Family("mixtral", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), softmax_renormalized,
           gated_hidden_act),
    Family("minimax", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), softmax_renormalized,
           gated_hidden_act),
    Family("minimax_m2", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), _minimax_m2_routing,
           gated_hidden_act),
)

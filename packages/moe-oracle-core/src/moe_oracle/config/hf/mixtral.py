"""Mixtral and MiniMax (Text-01, M1): softmax over all experts, top-k, renormalized; experts
sized by ``intermediate_size``.

MiniMax's ``mlp_alpha_factor`` / ``mlp_beta_factor`` scale the residual around the MoE block and
its lightning-attention layers are attention: both are outside this layer.
"""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, gated_hidden_act, softmax_renormalized

FAMILIES = (
    Family("mixtral", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), softmax_renormalized,
           gated_hidden_act),
    Family("minimax", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), softmax_renormalized,
           gated_hidden_act),
)

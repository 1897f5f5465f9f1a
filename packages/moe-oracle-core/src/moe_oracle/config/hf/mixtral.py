"""Mixtral: softmax over all experts, top-k, renormalized; experts sized by ``intermediate_size``."""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, gated_hidden_act, softmax_renormalized

FAMILIES = (
    Family("mixtral", ("num_local_experts",), EXPERTS_PER_TOK, ("intermediate_size",), softmax_renormalized,
           gated_hidden_act),
)

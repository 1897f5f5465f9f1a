"""OLMoE and FlexOlmo: softmax top-k over ``num_experts`` experts sized by ``intermediate_size``,
no shared expert; ``norm_topk_prob`` (default false in both) renormalizes the chosen weights."""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, NormTopkProb, gated_hidden_act

FAMILIES = (
    Family("olmoe", ("num_experts", "num_local_experts"), EXPERTS_PER_TOK, ("intermediate_size",),
           NormTopkProb(False), gated_hidden_act),
    Family("flex_olmo", ("num_experts", "num_local_experts"), EXPERTS_PER_TOK, ("intermediate_size",),
           NormTopkProb(False), gated_hidden_act),
)

"""Qwen2-MoE and Qwen3-MoE: softmax top-k, renormalized only with ``norm_topk_prob``.

Qwen2-MoE's shared expert (``shared_expert_intermediate_size``, gated by a sigmoid of its own
linear) is a dense MLP beside the routed experts, outside this layer.
"""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, NormTopkProb, gated_hidden_act

# transformers >= 5 writes Qwen's expert count as num_local_experts.
_QWEN_EXPERTS = ("num_experts", "num_local_experts")
FAMILIES = (
    Family("qwen2_moe", _QWEN_EXPERTS, EXPERTS_PER_TOK, ("moe_intermediate_size",), NormTopkProb(False),
           gated_hidden_act),
    Family("qwen3_moe", _QWEN_EXPERTS, EXPERTS_PER_TOK, ("moe_intermediate_size",), NormTopkProb(False),
           gated_hidden_act),
)

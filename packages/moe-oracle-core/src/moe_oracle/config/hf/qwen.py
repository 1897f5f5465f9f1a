"""Qwen2-MoE, Qwen3-MoE and Qwen3-Next: softmax top-k, renormalized only with ``norm_topk_prob``
(default false for Qwen2/3-MoE, true for Qwen3-Next, as in transformers' config classes). The
text models of Qwen3-VL-MoE and Qwen3.5-MoE (``qwen3_vl_moe_text``, ``qwen3_5_moe_text``, inside a
``text_config``) always renormalize: their router has no ``norm_topk_prob`` switch.

The shared expert of Qwen2-MoE and Qwen3-Next (``shared_expert_intermediate_size``, its output
scaled by a sigmoid of its own one-row linear) is a dense MLP beside the routed experts, and the
layers in ``mlp_only_layers`` (or off the ``decoder_sparse_step``) are dense: both are outside
this layer. Qwen3-Next's linear-attention layers are attention.
"""

from __future__ import annotations

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, NormTopkProb, gated_hidden_act, softmax_renormalized

# transformers >= 5 writes Qwen's expert count as num_local_experts.
_QWEN_EXPERTS = ("num_experts", "num_local_experts")
FAMILIES = (
    Family("qwen2_moe", _QWEN_EXPERTS, EXPERTS_PER_TOK, ("moe_intermediate_size",), NormTopkProb(False),
           gated_hidden_act),
    Family("qwen3_moe", _QWEN_EXPERTS, EXPERTS_PER_TOK, ("moe_intermediate_size",), NormTopkProb(False),
           gated_hidden_act),
    Family("qwen3_next", _QWEN_EXPERTS, EXPERTS_PER_TOK, ("moe_intermediate_size",), NormTopkProb(True),
           gated_hidden_act),
    Family("qwen3_vl_moe_text", _QWEN_EXPERTS, EXPERTS_PER_TOK, ("moe_intermediate_size",), softmax_renormalized,
           gated_hidden_act),
    Family("qwen3_5_moe_text", _QWEN_EXPERTS, EXPERTS_PER_TOK, ("moe_intermediate_size",), softmax_renormalized,
           gated_hidden_act),
)

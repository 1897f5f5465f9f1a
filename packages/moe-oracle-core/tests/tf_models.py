"""Tiny random-weight transformers models of every MoE family the integration serves (tests and bench)."""

from __future__ import annotations

from typing import Any

import torch

COMMON: dict[str, Any] = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
FAMILIES: dict[str, dict[str, Any]] = {
    "mixtral": dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2),
    "qwen2_moe": dict(intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                      num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, norm_topk_prob=False),
    "qwen3_moe": dict(intermediate_size=64, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                      decoder_sparse_step=1, norm_topk_prob=True, head_dim=16),
    "deepseek_v2": dict(intermediate_size=64, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
                        n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None,
                        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1,
                        topk_method="greedy"),
    "deepseek_v3": dict(intermediate_size=64, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
                        n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24,
                        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, n_group=2, topk_group=1),
    "gpt_oss": dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2, head_dim=16, sliding_window=16,
                    layer_types=["sliding_attention", "full_attention"]),
    "olmoe": dict(intermediate_size=32, num_experts=8, num_experts_per_tok=2),
}


def tiny_model(model_type: str, *, dtype: torch.dtype = torch.float32, seed: int = 0, device: str = "cpu",
               **changes: Any) -> torch.nn.Module:
    """A random ``AutoModelForCausalLM`` of ``model_type`` (weights ~ N(0, 0.1)), in eval mode, eager experts."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **{**COMMON, **FAMILIES[model_type], **changes})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    model = model.to(device=device, dtype=dtype).eval()
    model.set_experts_implementation("eager")
    return model

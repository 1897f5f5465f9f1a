"""Published Hugging Face ``config.json`` files of MoE models, as Python dicts, for the tests.

Each dict is the file as published on the Hub (JSON ``true``/``null`` written as ``True``/``None``),
read through public copies found with the code search tools. Where the whole file could not be
found, the comment says which fields were written from the model card or from partial copies.
Quantized variants at the end attach a ``quantization_config`` in the form its tool writes.
"""

from __future__ import annotations

from typing import Any

Config = dict[str, Any]

# mistralai/Mixtral-8x7B-v0.1 (the full file, identical in several public copies).
MIXTRAL_8X7B: Config = {
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.36.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}

# mistralai/Mixtral-8x22B-v0.1, as copied into a public test (scale-ai/llm-engine); the copy
# lacks the file's trailing sliding_window/tie_word_embeddings/use_cache keys.
MIXTRAL_8X22B: Config = {
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 6144,
    "initializer_range": 0.02,
    "intermediate_size": 16384,
    "max_position_embeddings": 65536,
    "model_type": "mixtral",
    "num_attention_heads": 48,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 56,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000,
    "router_aux_loss_coef": 0.001,
    "router_jitter_noise": 0.0,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0",
    "vocab_size": 32000,
}

# Qwen/Qwen2-57B-A14B (the full file, as copied into TensorRT-LLM's tests).
QWEN2_57B_A14B: Config = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "qwen2_moe",
    "moe_intermediate_size": 2560,
    "norm_topk_prob": False,
    "num_attention_heads": 28,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001,
    "shared_expert_intermediate_size": 20480,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

# Qwen/Qwen3-30B-A3B (the full file; public copies agree field for field).
QWEN3_30B_A3B: Config = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 6144,
    "max_position_embeddings": 40960,
    "max_window_layers": 48,
    "mlp_only_layers": [],
    "model_type": "qwen3_moe",
    "moe_intermediate_size": 768,
    "norm_topk_prob": True,
    "num_attention_heads": 32,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 48,
    "num_key_value_heads": 4,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

# Qwen/Qwen3-235B-A22B: the whole file was not found; written from the model card (94 layers,
# 64/4 heads, 128 experts, 8 active) and public copies of its MoE fields (hidden 4096,
# moe_intermediate 1536, norm_topk_prob true), with the other keys as in Qwen3-30B-A3B's file.
QWEN3_235B_A22B: Config = {
    **QWEN3_30B_A3B,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "max_window_layers": 94,
    "moe_intermediate_size": 1536,
    "num_attention_heads": 64,
    "num_hidden_layers": 94,
    "num_key_value_heads": 4,
}

# deepseek-ai/DeepSeek-V2 (236B; the full file less auto_map, as copied into Megatron-Bridge's tests).
DEEPSEEK_V2: Config = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "initializer_range": 0.02,
    "intermediate_size": 12288,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 1536,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 160,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 128,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 60,
    "num_key_value_heads": 128,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 4096, "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 16.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 3,
    "topk_method": "group_limited_greedy",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.39.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}

# deepseek-ai/DeepSeek-V2-Lite: the model fields as copied verbatim into a public script; the
# file's bookkeeping keys (auto_map, aux_loss_alpha, token ids, versions) are left out.
DEEPSEEK_V2_LITE: Config = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 10944,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 4096, "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 1.0,
    "scoring_func": "softmax",
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "v_head_dim": 128,
    "vocab_size": 102400,
}

# deepseek-ai/DeepSeek-V3 (the full file less auto_map; several public copies agree).
DEEPSEEK_V3: Config = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096, "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

# openai/gpt-oss-20b (the full file, as copied into Modular's tests). It has no torch_dtype.
GPT_OSS_20B: Config = {
    "architectures": ["GptOssForCausalLM"],
    "attention_bias": True,
    "attention_dropout": 0.0,
    "eos_token_id": 200002,
    "experts_per_token": 4,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2880,
    "initial_context_length": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072,
    "model_type": "gpt_oss",
    "num_attention_heads": 64,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 8,
    "num_local_experts": 32,
    "output_router_logits": False,
    "pad_token_id": 199999,
    "quantization_config": {
        "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head",
        ],
        "quant_method": "mxfp4",
    },
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
        "rope_type": "yarn", "truncate": False,
    },
    "rope_theta": 150000,
    "router_aux_loss_coef": 0.9,
    "sliding_window": 128,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "transformers_version": "4.55.0.dev0",
    "use_cache": True,
    "vocab_size": 201088,
}

# openai/gpt-oss-120b: the whole file was not found; the model card gives 36 layers and 128
# experts, and its file differs from gpt-oss-20b's only there (and in layer_types' length).
GPT_OSS_120B: Config = {
    **GPT_OSS_20B,
    "layer_types": ["sliding_attention", "full_attention"] * 18,
    "num_hidden_layers": 36,
    "num_local_experts": 128,
}

# moonshotai/Kimi-K2.6: a multimodal wrapper (kimi_k25) around a DeepSeek-V3 text model shipped
# as compressed-tensors int4 (W4A16, groups of 32). The text fields and quantization keys are
# those public code checks against the official file; vision_config and bookkeeping keys omitted.
KIMI_K2_6: Config = {
    "architectures": ["KimiK25ForConditionalGeneration"],
    "model_type": "kimi_k25",
    "text_config": {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "kimi_k2",
        "dtype": "bfloat16",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "num_hidden_layers": 61,
        "n_routed_experts": 384,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 2048,
        "max_position_embeddings": 262144,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "norm_topk_prob": True,
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 2.827,
        "rms_norm_eps": 1e-5,
        "rope_theta": 50000.0,
        "quantization_config": {
            "config_groups": {
                "group_0": {
                    "input_activations": None,
                    "output_activations": None,
                    "targets": ["Linear"],
                    "weights": {
                        "actorder": None, "block_structure": None, "dynamic": False, "group_size": 32,
                        "num_bits": 4, "observer": "minmax", "observer_kwargs": {}, "strategy": "group",
                        "symmetric": True, "type": "int",
                    },
                },
            },
            "format": "pack-quantized",
            "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"],
            "kv_cache_scheme": None,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
        },
    },
}


def ct_group(weights: Config, input_activations: Config | None, *, targets: list[str] | None = None) -> Config:
    """One compressed-tensors ``config_groups`` entry as llm-compressor writes it."""
    return {"input_activations": input_activations, "output_activations": None,
            "targets": targets or ["Linear"], "weights": weights}


def ct_args(type_: str, bits: int, strategy: str, *, dynamic: bool | str = False, symmetric: bool = True,
            group_size: int | None = None, block_structure: list[int] | None = None,
            actorder: str | None = None) -> Config:
    """compressed-tensors ``QuantizationArgs`` with every key it serializes."""
    return {"actorder": actorder, "block_structure": block_structure, "dynamic": dynamic, "group_size": group_size,
            "num_bits": bits, "observer": None if dynamic else "minmax", "observer_kwargs": {}, "strategy": strategy,
            "symmetric": symmetric, "type": type_}


def compressed_tensors(*groups: Config, fmt: str) -> Config:
    """A compressed-tensors ``quantization_config`` holding ``groups`` as group_0, group_1, ..."""
    return {
        "config_groups": {f"group_{i}": g for i, g in enumerate(groups)},
        "format": fmt,
        "global_compression_ratio": None,
        "ignore": ["lm_head", "re:.*mlp.gate$"],
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    }


# RedHatAI/Qwen3-30B-A3B-FP8-dynamic: the file was not found; it is Qwen3-30B-A3B's with the
# quantization_config of llm-compressor's FP8_DYNAMIC scheme (model card: fp8 weights per
# channel, fp8 activations per token, dynamic; router gates left unquantized).
QWEN3_30B_A3B_FP8_DYNAMIC: Config = {
    **QWEN3_30B_A3B,
    "quantization_config": compressed_tensors(
        ct_group(ct_args("float", 8, "channel"), ct_args("float", 8, "token", dynamic=True)), fmt="float-quantized"),
}


# Families added for issue 19 part 4 -----------------------------------------------------------------
# Each *_DEFAULTS dict is what the family's transformers config class (transformers 5.25,
# configuration_<family>.py) defaults the MoE keys to: the file ``Config().save_pretrained`` writes,
# less the keys a MoE layer does not read. The published files that follow were read through public
# copies found with the code search tools, or written from the model card where said; they hold the
# MoE keys and the sizes around them, not the bookkeeping keys (token ids, rope, versions).

OLMOE_DEFAULTS: Config = {"model_type": "olmoe", "hidden_size": 2048, "intermediate_size": 2048, "num_experts": 64,
                          "num_experts_per_tok": 8, "norm_topk_prob": False, "hidden_act": "silu"}
GLM4_MOE_DEFAULTS: Config = {"model_type": "glm4_moe", "hidden_size": 4096, "intermediate_size": 10944,
                             "moe_intermediate_size": 1408, "n_routed_experts": 128, "n_shared_experts": 1,
                             "num_experts_per_tok": 8, "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1,
                             "first_k_dense_replace": 1, "norm_topk_prob": True, "hidden_act": "silu"}
QWEN3_NEXT_DEFAULTS: Config = {"model_type": "qwen3_next", "hidden_size": 2048, "intermediate_size": 5632,
                               "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
                               "num_experts": 512, "num_experts_per_tok": 10, "norm_topk_prob": True,
                               "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu"}
LLAMA4_TEXT_DEFAULTS: Config = {"model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
                                "intermediate_size_mlp": 16384, "num_local_experts": 16, "num_experts_per_tok": 1,
                                "interleave_moe_layer_step": 1, "moe_layers": None, "hidden_act": "silu"}
PHIMOE_DEFAULTS: Config = {"model_type": "phimoe", "hidden_size": 4096, "intermediate_size": 6400,
                           "num_local_experts": 16, "num_experts_per_tok": 2, "router_jitter_noise": 0.01,
                           "input_jitter_noise": 0.0, "hidden_act": "silu"}
GRANITEMOE_DEFAULTS: Config = {"model_type": "granitemoe", "hidden_size": 4096, "intermediate_size": 11008,
                               "num_local_experts": 8, "num_experts_per_tok": 2, "hidden_act": "silu"}
MINIMAX_DEFAULTS: Config = {"model_type": "minimax", "hidden_size": 4096, "intermediate_size": 14336,
                            "num_local_experts": 8, "num_experts_per_tok": 2, "hidden_act": "silu"}
ERNIE4_5_MOE_DEFAULTS: Config = {"model_type": "ernie4_5_moe", "hidden_size": 2560, "intermediate_size": 12288,
                                 "moe_intermediate_size": 1536, "moe_k": 6, "moe_num_experts": 64,
                                 "moe_num_shared_experts": 2, "moe_layer_start_index": 1, "moe_layer_end_index": -1,
                                 "moe_layer_interval": 1, "moe_norm_min": 1e-12, "use_bias": False,
                                 "hidden_act": "silu"}
HUNYUAN_V1_MOE_DEFAULTS: Config = {"model_type": "hunyuan_v1_moe", "hidden_size": 4096, "intermediate_size": 11008,
                                   "num_experts": 1, "moe_topk": 1, "hidden_act": "silu"}
# Dots1Config leaves the expert counts unset (None): its defaults describe no MoE layer.
DOTS1_DEFAULTS: Config = {"model_type": "dots1", "hidden_size": 4608, "intermediate_size": 10944,
                          "moe_intermediate_size": 1408, "n_shared_experts": None, "n_routed_experts": None,
                          "n_group": 1, "topk_group": 1, "num_experts_per_tok": None, "first_k_dense_replace": 0,
                          "norm_topk_prob": False, "routed_scaling_factor": 1.0, "hidden_act": "silu"}

# allenai/OLMoE-1B-7B-0924 (the MoE fields as two public copies give them; fp32 weights).
OLMOE_1B_7B: Config = {
    "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "hidden_act": "silu", "hidden_size": 2048,
    "intermediate_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16,
    "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": False, "router_aux_loss_coef": 0.01,
    "clip_qkv": None, "vocab_size": 50304, "tie_word_embeddings": False, "torch_dtype": "float32",
}

# zai-org/GLM-4.5-Air (the whole Glm4MoeConfig as ms-swift prints it for the checkpoint).
GLM_4_5_AIR: Config = {
    "architectures": ["Glm4MoeForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": [151329, 151336, 151338], "first_k_dense_replace": 1, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 10944, "max_position_embeddings": 131072,
    "model_type": "glm4_moe", "moe_intermediate_size": 1408, "n_group": 1, "n_routed_experts": 128,
    "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 96, "num_experts_per_tok": 8,
    "num_hidden_layers": 46, "num_key_value_heads": 8, "num_nextn_predict_layers": 1, "pad_token_id": 151329,
    "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 1000000,
    "routed_scaling_factor": 1.0, "tie_word_embeddings": False, "topk_group": 1, "torch_dtype": "bfloat16",
    "transformers_version": "4.54.1", "use_cache": True, "use_qk_norm": False, "vocab_size": 151552,
}

# Qwen/Qwen3-Next-80B-A3B-Instruct: written from the model card (48 layers, 512 experts, 10 routed
# plus 1 shared, expert size 512, hidden 2048, gated DeltaNet in 3 of every 4 layers).
QWEN3_NEXT_80B_A3B: Config = {
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_act": "silu",
    "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 2,
    "head_dim": 256, "full_attention_interval": 4, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512, "num_experts": 512,
    "num_experts_per_tok": 10, "norm_topk_prob": True, "torch_dtype": "bfloat16",
}

# meta-llama/Llama-4-Scout-17B-16E: a llama4 wrapper whose text_config is a llama4_text model; the
# whole file was not found: written from the model card (16 experts, 1 routed + 1 shared per token,
# every layer MoE) and Llama4TextConfig's defaults, which are Scout's sizes. vision_config omitted.
LLAMA_4_SCOUT: Config = {
    "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "torch_dtype": "bfloat16",
    "text_config": {
        "model_type": "llama4_text", "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 8192,
        "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40,
        "num_key_value_heads": 8, "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 1, "torch_dtype": "bfloat16",
    },
}
# meta-llama/Llama-4-Maverick-17B-128E: the same text model with 128 experts on every other layer
# (model card; the dense layers between use intermediate_size_mlp).
LLAMA_4_MAVERICK: Config = {
    **LLAMA_4_SCOUT,
    "text_config": {**LLAMA_4_SCOUT["text_config"], "num_local_experts": 128, "interleave_moe_layer_step": 2},
}

# microsoft/Phi-3.5-MoE-instruct: the whole file was not found; written from the model card (16 experts,
# 2 active, 32 layers) and PhimoeConfig's defaults, which are this model's sizes.
PHI_3_5_MOE: Config = {
    "architectures": ["PhiMoEForCausalLM"], "model_type": "phimoe", "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 6400, "num_hidden_layers": 32, "num_local_experts": 16, "num_experts_per_tok": 2,
    "router_jitter_noise": 0.01, "torch_dtype": "bfloat16",
}

# ibm-granite/granite-3.0-1b-a400m-base (model card: 32 experts of 512, 8 active, hidden 1024, 24 layers).
GRANITE_3_0_1B_A400M: Config = {
    "architectures": ["GraniteMoeForCausalLM"], "model_type": "granitemoe", "hidden_act": "silu",
    "hidden_size": 1024, "intermediate_size": 512, "num_hidden_layers": 24, "num_local_experts": 32,
    "num_experts_per_tok": 8, "torch_dtype": "bfloat16",
}

# MiniMaxAI/MiniMax-Text-01-hf (MiniMax-M1 has the same MoE): the MiniMax-01 report gives 32 experts,
# top-2, hidden 6144, expert size 9216, 80 layers.
MINIMAX_TEXT_01: Config = {
    "architectures": ["MiniMaxForCausalLM"], "model_type": "minimax", "hidden_act": "silu", "hidden_size": 6144,
    "intermediate_size": 9216, "num_hidden_layers": 80, "num_local_experts": 32, "num_experts_per_tok": 2,
    "torch_dtype": "bfloat16",
}

# baidu/ERNIE-4.5-21B-A3B-PT (the model fields, as three public copies agree).
ERNIE_4_5_21B_A3B: Config = {
    "architectures": ["Ernie4_5_MoeForCausalLM"], "model_type": "ernie4_5_moe", "hidden_act": "silu",
    "hidden_size": 2560, "intermediate_size": 12288, "max_position_embeddings": 131072, "num_attention_heads": 20,
    "num_key_value_heads": 4, "num_hidden_layers": 28, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "vocab_size": 103424, "use_bias": False, "tie_word_embeddings": True, "moe_num_experts": 64,
    "moe_num_shared_experts": 2, "moe_intermediate_size": 1536, "moe_k": 6, "moe_layer_start_index": 1,
    "moe_layer_end_index": 27, "moe_layer_interval": 1, "torch_dtype": "bfloat16",
}

# tencent/Hunyuan-A13B-Instruct (the MoE fields, as two public copies agree).
HUNYUAN_A13B: Config = {
    "architectures": ["HunYuanMoEV1ForCausalLM"], "model_type": "hunyuan_v1_moe", "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 3072, "vocab_size": 128167, "torch_dtype": "bfloat16", "num_experts": 64,
    "moe_intermediate_size": [3072] * 32, "moe_topk": [8] * 32, "num_shared_expert": [1] * 32,
}

# rednote-hilab/dots.llm1.inst (the fields a public loader's test copies from the checkpoint; n_group and
# topk_group are null there, so they are left out).
DOTS_LLM1: Config = {
    "model_type": "dots1", "hidden_size": 4096, "num_hidden_layers": 62, "intermediate_size": 10944,
    "num_attention_heads": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-05, "vocab_size": 152064,
    "first_k_dense_replace": 1, "moe_intermediate_size": 1408, "n_routed_experts": 128, "n_shared_experts": 2,
    "num_experts_per_tok": 6, "norm_topk_prob": True, "routed_scaling_factor": 2.5, "max_position_embeddings": 32768,
    "rope_theta": 10000000, "scoring_func": "sigmoid", "attention_bias": False, "tie_word_embeddings": False,
}

# Config-class defaults of the families read like one above (transformers 5.25), written as the
# text_config a multimodal wrapper holds where the family is one.
QWEN3_VL_MOE_TEXT_DEFAULTS: Config = {"model_type": "qwen3_vl_moe_text", "hidden_size": 2048,
                                      "moe_intermediate_size": 1408, "num_experts": 60, "num_experts_per_tok": 4,
                                      "hidden_act": "silu"}
QWEN3_5_MOE_TEXT_DEFAULTS: Config = {"model_type": "qwen3_5_moe_text", "hidden_size": 2048,
                                     "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
                                     "num_experts": 256, "num_experts_per_tok": 8, "hidden_act": "silu"}
GLM4_MOE_LITE_DEFAULTS: Config = {"model_type": "glm4_moe_lite", "hidden_size": 2048, "intermediate_size": 10240,
                                  "moe_intermediate_size": 1536, "n_shared_experts": 1, "n_routed_experts": 64,
                                  "routed_scaling_factor": 1.8, "n_group": 1, "topk_group": 1,
                                  "norm_topk_prob": True, "num_experts_per_tok": 4, "hidden_act": "silu"}
GLM4V_MOE_TEXT_DEFAULTS: Config = {"model_type": "glm4v_moe_text", "hidden_size": 4096,
                                   "moe_intermediate_size": 1408, "num_experts_per_tok": 8, "n_routed_experts": 128,
                                   "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1,
                                   "norm_topk_prob": True, "hidden_act": "silu"}
DEEPSEEK_V32_DEFAULTS: Config = {"model_type": "deepseek_v32", "hidden_size": 7168, "intermediate_size": 18432,
                                 "moe_intermediate_size": 2048, "n_shared_experts": 1, "n_routed_experts": 256,
                                 "routed_scaling_factor": 2.5, "n_group": 8, "topk_group": 4, "norm_topk_prob": True,
                                 "num_experts_per_tok": 8, "hidden_act": "silu"}
MINIMAX_M2_DEFAULTS: Config = {"model_type": "minimax_m2", "hidden_size": 3072, "intermediate_size": 1536,
                               "num_experts_per_tok": 8, "num_local_experts": 256, "hidden_act": "silu"}
FLEX_OLMO_DEFAULTS: Config = {"model_type": "flex_olmo", "hidden_size": 4096, "intermediate_size": 11008,
                              "num_experts_per_tok": 5, "num_experts": 7, "norm_topk_prob": False, "hidden_act": "silu"}
GRANITEMOESHARED_DEFAULTS: Config = {"model_type": "granitemoeshared", "hidden_size": 4096, "intermediate_size": 11008,
                                     "num_local_experts": 8, "num_experts_per_tok": 2, "shared_intermediate_size": 0,
                                     "hidden_act": "silu"}

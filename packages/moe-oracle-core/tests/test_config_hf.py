"""``MoEConfig.from_hf``: published config.json files in, every derived field checked."""

import json
import re
from pathlib import Path
from typing import Any

import hf_configs as hf
import pytest
import torch

from moe_oracle import ConfigError, MoEConfig, ParallelConfig, RoutingConfig

SOFTMAX = RoutingConfig()
SIGMOID_BIAS = RoutingConfig(scoring="sigmoid", score_correction_bias=True)  # GLM-4.5: renormalized, scale 1
LLAMA4_ROUTING = RoutingConfig(scoring="sigmoid", renormalize=False)  # sigmoid of the chosen logits, unnormalized
ERNIE_ROUTING = RoutingConfig(score_correction_bias=True)  # softmax, biased choice, renormalized
DEEPSEEK_V3_ROUTING = RoutingConfig(scoring="sigmoid", num_expert_groups=8, topk_groups=4,
                                    score_correction_bias=True, routed_scaling_factor=2.5)

# model: (config, MoEConfig fields expected; any field not named keeps its MoEConfig default)
EXPECTED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "Mixtral-8x7B-v0.1": (hf.MIXTRAL_8X7B, dict(
        num_experts=8, top_k=2, hidden_size=4096, intermediate_size=14336, quant="bf16", routing=SOFTMAX)),
    "Mixtral-8x22B-v0.1": (hf.MIXTRAL_8X22B, dict(
        num_experts=8, top_k=2, hidden_size=6144, intermediate_size=16384, quant="bf16", routing=SOFTMAX)),
    "Qwen2-57B-A14B": (hf.QWEN2_57B_A14B, dict(
        num_experts=64, top_k=8, hidden_size=3584, intermediate_size=2560, quant="bf16",
        routing=RoutingConfig(renormalize=False))),
    "Qwen3-30B-A3B": (hf.QWEN3_30B_A3B, dict(
        num_experts=128, top_k=8, hidden_size=2048, intermediate_size=768, quant="bf16", routing=SOFTMAX)),
    "Qwen3-235B-A22B": (hf.QWEN3_235B_A22B, dict(
        num_experts=128, top_k=8, hidden_size=4096, intermediate_size=1536, quant="bf16", routing=SOFTMAX)),
    "Qwen3-30B-A3B-FP8-dynamic": (hf.QWEN3_30B_A3B_FP8_DYNAMIC, dict(
        num_experts=128, top_k=8, hidden_size=2048, intermediate_size=768, quant="fp8_channel", routing=SOFTMAX)),
    "DeepSeek-V2": (hf.DEEPSEEK_V2, dict(
        num_experts=160, top_k=6, hidden_size=5120, intermediate_size=1536, quant="bf16",
        routing=RoutingConfig(renormalize=False, num_expert_groups=8, topk_groups=3, routed_scaling_factor=16.0))),
    "DeepSeek-V2-Lite": (hf.DEEPSEEK_V2_LITE, dict(
        num_experts=64, top_k=6, hidden_size=2048, intermediate_size=1408, quant="bf16",
        routing=RoutingConfig(renormalize=False))),
    "DeepSeek-V3": (hf.DEEPSEEK_V3, dict(
        num_experts=256, top_k=8, hidden_size=7168, intermediate_size=2048, quant="fp8_block",
        routing=DEEPSEEK_V3_ROUTING)),
    "gpt-oss-20b": (hf.GPT_OSS_20B, dict(
        num_experts=32, top_k=4, hidden_size=2880, intermediate_size=2880, quant="mxfp4", activation="swigluoai",
        has_bias=True, swiglu_alpha=1.702, swiglu_limit=7.0, routing=RoutingConfig(softmax_after_topk=True))),
    "gpt-oss-120b": (hf.GPT_OSS_120B, dict(
        num_experts=128, top_k=4, hidden_size=2880, intermediate_size=2880, quant="mxfp4", activation="swigluoai",
        has_bias=True, swiglu_alpha=1.702, swiglu_limit=7.0, routing=RoutingConfig(softmax_after_topk=True))),
    "Kimi-K2.6 (text_config, int4 g32)": (hf.KIMI_K2_6, dict(
        num_experts=384, top_k=8, hidden_size=7168, intermediate_size=2048, quant="int4_w4a16_g32",
        routing=RoutingConfig(scoring="sigmoid", score_correction_bias=True, routed_scaling_factor=2.827))),
    # Issue 19 part 4: the other MoE families transformers defines.
    "OLMoE-1B-7B-0924 (fp32)": (hf.OLMOE_1B_7B, dict(
        num_experts=64, top_k=8, hidden_size=2048, intermediate_size=1024, quant="fp32", dtype=torch.float32,
        routing=RoutingConfig(renormalize=False))),
    "GLM-4.5-Air": (hf.GLM_4_5_AIR, dict(
        num_experts=128, top_k=8, hidden_size=4096, intermediate_size=1408, quant="bf16", routing=SIGMOID_BIAS)),
    "Qwen3-Next-80B-A3B": (hf.QWEN3_NEXT_80B_A3B, dict(
        num_experts=512, top_k=10, hidden_size=2048, intermediate_size=512, quant="bf16", routing=SOFTMAX)),
    "Llama-4-Scout-17B-16E (text_config)": (hf.LLAMA_4_SCOUT, dict(
        num_experts=16, top_k=1, hidden_size=5120, intermediate_size=8192, quant="bf16", routing=LLAMA4_ROUTING,
        apply_router_weight_on_input=True)),
    "Llama-4-Maverick-17B-128E (text_config)": (hf.LLAMA_4_MAVERICK, dict(
        num_experts=128, top_k=1, hidden_size=5120, intermediate_size=8192, quant="bf16", routing=LLAMA4_ROUTING,
        apply_router_weight_on_input=True)),
    "granite-3.0-1b-a400m": (hf.GRANITE_3_0_1B_A400M, dict(
        num_experts=32, top_k=8, hidden_size=1024, intermediate_size=512, quant="bf16",
        routing=RoutingConfig(softmax_after_topk=True))),
    "MiniMax-Text-01": (hf.MINIMAX_TEXT_01, dict(
        num_experts=32, top_k=2, hidden_size=6144, intermediate_size=9216, quant="bf16", routing=SOFTMAX)),
    "ERNIE-4.5-21B-A3B": (hf.ERNIE_4_5_21B_A3B, dict(
        num_experts=64, top_k=6, hidden_size=2560, intermediate_size=1536, quant="bf16", routing=ERNIE_ROUTING)),
    "Hunyuan-A13B (per-layer lists)": (hf.HUNYUAN_A13B, dict(
        num_experts=64, top_k=8, hidden_size=4096, intermediate_size=3072, quant="bf16", routing=SOFTMAX)),
    "dots.llm1": (hf.DOTS_LLM1, dict(
        num_experts=128, top_k=6, hidden_size=4096, intermediate_size=1408, quant="bf16",
        routing=RoutingConfig(scoring="sigmoid", score_correction_bias=True, routed_scaling_factor=2.5))),
}

# family: (its transformers config class's defaults, MoEConfig fields expected)
DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "olmoe": (hf.OLMOE_DEFAULTS, dict(num_experts=64, top_k=8, hidden_size=2048, intermediate_size=2048,
                                      routing=RoutingConfig(renormalize=False))),
    "glm4_moe": (hf.GLM4_MOE_DEFAULTS, dict(num_experts=128, top_k=8, hidden_size=4096, intermediate_size=1408,
                                            routing=SIGMOID_BIAS)),
    "qwen3_next": (hf.QWEN3_NEXT_DEFAULTS, dict(num_experts=512, top_k=10, hidden_size=2048, intermediate_size=512,
                                                routing=SOFTMAX)),
    "llama4_text": (hf.LLAMA4_TEXT_DEFAULTS, dict(num_experts=16, top_k=1, hidden_size=5120, intermediate_size=8192,
                                                  routing=LLAMA4_ROUTING, apply_router_weight_on_input=True)),
    "granitemoe": (hf.GRANITEMOE_DEFAULTS, dict(num_experts=8, top_k=2, hidden_size=4096, intermediate_size=11008,
                                                routing=RoutingConfig(softmax_after_topk=True))),
    "minimax": (hf.MINIMAX_DEFAULTS, dict(num_experts=8, top_k=2, hidden_size=4096, intermediate_size=14336,
                                          routing=SOFTMAX)),
    "ernie4_5_moe": (hf.ERNIE4_5_MOE_DEFAULTS, dict(num_experts=64, top_k=6, hidden_size=2560, intermediate_size=1536,
                                                    routing=ERNIE_ROUTING)),
    "hunyuan_v1_moe": (hf.HUNYUAN_V1_MOE_DEFAULTS, dict(num_experts=1, top_k=1, hidden_size=4096,
                                                        intermediate_size=11008, routing=SOFTMAX)),
    # dots1's defaults have no expert count (test_dots1_defaults_have_no_experts); with the published counts:
    "dots1": ({**hf.DOTS1_DEFAULTS, "n_routed_experts": 128, "num_experts_per_tok": 6},
              dict(num_experts=128, top_k=6, hidden_size=4608, intermediate_size=1408,
                   routing=RoutingConfig(scoring="sigmoid", renormalize=False, score_correction_bias=True))),
    # phimoe's router is refused (test_phimoe_router_is_refused); its sizes read with routing=...:
    "phimoe": (hf.PHIMOE_DEFAULTS, dict(num_experts=16, top_k=2, hidden_size=4096, intermediate_size=6400,
                                        routing=SOFTMAX)),
    "qwen3_vl_moe_text": (hf.QWEN3_VL_MOE_TEXT_DEFAULTS, dict(num_experts=60, top_k=4, hidden_size=2048,
                                                              intermediate_size=1408, routing=SOFTMAX)),
    "qwen3_5_moe_text": (hf.QWEN3_5_MOE_TEXT_DEFAULTS, dict(num_experts=256, top_k=8, hidden_size=2048,
                                                            intermediate_size=512, routing=SOFTMAX)),
    "glm4_moe_lite": (hf.GLM4_MOE_LITE_DEFAULTS, dict(
        num_experts=64, top_k=4, hidden_size=2048, intermediate_size=1536,
        routing=RoutingConfig(scoring="sigmoid", score_correction_bias=True, routed_scaling_factor=1.8))),
    "glm4v_moe_text": (hf.GLM4V_MOE_TEXT_DEFAULTS, dict(num_experts=128, top_k=8, hidden_size=4096,
                                                        intermediate_size=1408, routing=SIGMOID_BIAS)),
    "deepseek_v32": (hf.DEEPSEEK_V32_DEFAULTS, dict(num_experts=256, top_k=8, hidden_size=7168, intermediate_size=2048,
                                                    routing=DEEPSEEK_V3_ROUTING)),
    "minimax_m2": (hf.MINIMAX_M2_DEFAULTS, dict(num_experts=256, top_k=8, hidden_size=3072, intermediate_size=1536,
                                                routing=RoutingConfig(scoring="sigmoid", score_correction_bias=True))),
    "flex_olmo": (hf.FLEX_OLMO_DEFAULTS, dict(num_experts=7, top_k=5, hidden_size=4096, intermediate_size=11008,
                                              routing=RoutingConfig(renormalize=False))),
    "granitemoeshared": (hf.GRANITEMOESHARED_DEFAULTS, dict(num_experts=8, top_k=2, hidden_size=4096,
                                                            intermediate_size=11008,
                                                            routing=RoutingConfig(softmax_after_topk=True))),
}
_DEFAULT_OVERRIDES = {"phimoe": {"routing": SOFTMAX}}


@pytest.mark.parametrize("model", EXPECTED)
def test_published_config_gives_every_field(model: str) -> None:
    config, want = EXPECTED[model]
    got = MoEConfig.from_hf(config)
    defaults = dict(activation="silu", is_gated=True, dtype=torch.bfloat16, has_bias=False, swiglu_alpha=None,
                    swiglu_limit=None, parallel=ParallelConfig(), apply_router_weight_on_input=False)
    for name, value in {**defaults, **want}.items():
        actual = got.scheme.name if name == "quant" else getattr(got, name)
        assert actual == value, f"{model}: {name} is {actual!r}, expected {value!r}"


_FIELD_DEFAULTS = dict(activation="silu", is_gated=True, dtype=torch.bfloat16, has_bias=False, swiglu_alpha=None,
                       swiglu_limit=None, parallel=ParallelConfig(), apply_router_weight_on_input=False)


@pytest.mark.parametrize("family", DEFAULTS)
def test_transformers_config_defaults_give_every_field(family: str) -> None:
    config, want = DEFAULTS[family]
    got = MoEConfig.from_hf(config, **_DEFAULT_OVERRIDES.get(family, {}))
    for name, value in {**_FIELD_DEFAULTS, "quant": "bf16", **want}.items():
        actual = got.scheme.name if name == "quant" else getattr(got, name)
        assert actual == value, f"{family}: {name} is {actual!r}, expected {value!r}"


_OPTIONAL_ROUTER_KEYS = ("norm_topk_prob", "routed_scaling_factor", "n_group", "topk_group", "moe_norm_min")


@pytest.mark.parametrize("family", DEFAULTS)
def test_absent_router_keys_default_as_in_transformers(family: str) -> None:
    """Each reader's defaults for absent optional keys are those of the family's config class."""
    config, _ = DEFAULTS[family]
    bare = {k: v for k, v in config.items() if k not in _OPTIONAL_ROUTER_KEYS}
    overrides = _DEFAULT_OVERRIDES.get(family, {})
    assert MoEConfig.from_hf(bare, **overrides) == MoEConfig.from_hf(config, **overrides)


def test_every_family_has_a_defaults_case() -> None:
    from moe_oracle.config.hf import FAMILIES as TABLE

    added = set(TABLE) - {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "kimi_k2", "gpt_oss"}
    assert added <= set(DEFAULTS), sorted(added - set(DEFAULTS))


def test_dots1_defaults_have_no_experts() -> None:
    with pytest.raises(ConfigError, match=r"^n_routed_experts: missing from the dots1 config.json "
                                          r"\(it gives MoEConfig.num_experts\)$"):
        MoEConfig.from_hf(hf.DOTS1_DEFAULTS)


def test_phimoe_router_is_refused_unless_routing_is_given() -> None:
    with pytest.raises(ConfigError, match=r"^router_jitter_noise: phimoe routes with sparsemixer ") as err:
        MoEConfig.from_hf(hf.PHI_3_5_MOE)
    assert err.value.field == "router_jitter_noise"
    sized = MoEConfig.from_hf(hf.PHI_3_5_MOE, routing=SOFTMAX)
    assert (sized.num_experts, sized.top_k, sized.hidden_size, sized.intermediate_size) == (16, 2, 4096, 6400)


def test_llama4_text_config_alone_reads_as_the_wrapper() -> None:
    assert MoEConfig.from_hf(hf.LLAMA_4_SCOUT["text_config"]) == MoEConfig.from_hf(hf.LLAMA_4_SCOUT)


def test_llama4_top_k_override_needs_weights_after_the_experts() -> None:
    got = MoEConfig.from_hf(hf.LLAMA_4_SCOUT, top_k=2, apply_router_weight_on_input=False)
    assert got.top_k == 2 and not got.apply_router_weight_on_input


def test_path_to_file_or_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(hf.DEEPSEEK_V3), encoding="utf-8")
    from_dict = MoEConfig.from_hf(hf.DEEPSEEK_V3)
    assert MoEConfig.from_hf(tmp_path) == from_dict
    assert MoEConfig.from_hf(str(tmp_path / "config.json")) == from_dict


def test_dtype_key_and_torch_dtype() -> None:
    new_style = {k: v for k, v in hf.QWEN3_30B_A3B.items() if k != "torch_dtype"} | {"dtype": "float16"}
    assert MoEConfig.from_hf(new_style).dtype == torch.float16
    assert MoEConfig.from_hf({**hf.MIXTRAL_8X7B, "torch_dtype": "float32"}).scheme.name == "fp32"
    assert MoEConfig.from_hf(hf.GPT_OSS_20B).dtype == torch.bfloat16  # gpt-oss writes no dtype


def test_transformers_5_expert_count_key() -> None:
    renamed = {k: v for k, v in hf.QWEN3_30B_A3B.items() if k != "num_experts"} | {"num_local_experts": 128}
    assert MoEConfig.from_hf(renamed) == MoEConfig.from_hf(hf.QWEN3_30B_A3B)


def test_deepseek_defaults_when_router_keys_are_absent() -> None:
    router_keys = ("scoring_func", "topk_method", "norm_topk_prob", "routed_scaling_factor", "n_group", "topk_group")
    bare_v3 = {k: v for k, v in hf.DEEPSEEK_V3.items() if k not in router_keys}
    assert MoEConfig.from_hf(bare_v3).routing == DEEPSEEK_V3_ROUTING
    bare_v2 = {k: v for k, v in hf.DEEPSEEK_V2.items() if k not in router_keys}
    assert MoEConfig.from_hf(bare_v2).routing == RoutingConfig(renormalize=False)


def test_overrides_replace_read_values() -> None:
    plain = MoEConfig.from_hf(hf.DEEPSEEK_V3, quant="bf16")
    assert plain.scheme.name == "bf16" and plain.dtype == torch.bfloat16
    half = MoEConfig.from_hf(hf.DEEPSEEK_V3, quant="fp16")
    assert half.scheme.name == "fp16" and half.dtype == torch.float16
    fp8_half = MoEConfig.from_hf(hf.DEEPSEEK_V3, dtype="fp16")
    assert fp8_half.scheme.name == "fp8_block" and fp8_half.dtype == torch.float16
    parallel = ParallelConfig(tp_size=2, ep_size=8, ep_rank=3, all2all="deepep_low_latency")
    sharded = MoEConfig.from_hf(hf.DEEPSEEK_V3, parallel=parallel, top_k=4)
    assert sharded.parallel == parallel and sharded.num_local_experts == 32 and sharded.top_k == 4
    assert MoEConfig.from_hf(hf.GPT_OSS_20B, quant="mxfp4_a8").scheme.name == "mxfp4_a8"


def test_an_overridden_field_is_not_read() -> None:
    gptq = {**hf.QWEN3_30B_A3B, "quantization_config": {"bits": 4, "group_size": 128, "quant_method": "gptq"}}
    assert MoEConfig.from_hf(gptq, quant="bf16").scheme.name == "bf16"
    no_top_k = {k: v for k, v in hf.MIXTRAL_8X7B.items() if k != "num_experts_per_tok"}
    assert MoEConfig.from_hf(no_top_k, top_k=1).top_k == 1


# quantization_config -> scheme -------------------------------------------------------------
ct, args, group = hf.compressed_tensors, hf.ct_args, hf.ct_group
FP8_TOKEN = args("float", 8, "token", dynamic=True)
NVFP4_ACT = args("float", 4, "tensor_group", dynamic="local", group_size=16)

QUANT_CASES: dict[str, tuple[dict[str, Any] | None, str]] = {
    "no quantization_config": (None, "bf16"),
    "empty quantization_config": ({}, "bf16"),
    "fp8 block [128, 128]": (hf.DEEPSEEK_V3["quantization_config"], "fp8_block"),
    "fp8 per tensor, dynamic": ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8_tensor"),
    "fp8 per tensor, static": ({"quant_method": "fp8", "activation_scheme": "static"}, "fp8_tensor_static"),
    "mxfp4": (hf.GPT_OSS_20B["quantization_config"], "mxfp4"),
    "fbgemm_fp8": ({"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0}, "fp8_channel"),
    "ct W4A16 g128": (ct(group(args("int", 4, "group", group_size=128), None), fmt="pack-quantized"), "int4_w4a16"),
    "ct W4A16 g64 asym": (ct(group(args("int", 4, "group", group_size=64, symmetric=False), None),
                             fmt="pack-quantized"), "int4_w4a16_g64_zp"),
    "ct W4A16 actorder weight": (ct(group(args("int", 4, "group", group_size=128, actorder="weight"), None),
                                    fmt="pack-quantized"), "int4_w4a16"),
    "ct W8A16 group": (ct(group(args("int", 8, "group", group_size=128), None), fmt="pack-quantized"),
                       "int8_w8a16_group"),
    "ct W8A16 channel": (ct(group(args("int", 8, "channel"), None), fmt="pack-quantized"), "int8_w8a16"),
    "ct W8A8 int8": (ct(group(args("int", 8, "channel"), args("int", 8, "token", dynamic=True)),
                        fmt="int-quantized"), "int8_w8a8"),
    "ct W4A8 int8": (ct(group(args("int", 4, "group", group_size=128), args("int", 8, "token", dynamic=True)),
                        fmt="int-quantized"), "w4a8_int8"),
    "ct W4A8 fp8": (ct(group(args("int", 4, "group", group_size=128), FP8_TOKEN), fmt="int-quantized"), "w4a8_fp8"),
    "ct FP8 tensor dynamic": (ct(group(args("float", 8, "tensor"), args("float", 8, "tensor", dynamic=True)),
                                 fmt="float-quantized"), "fp8_tensor"),
    "ct FP8 tensor static": (ct(group(args("float", 8, "tensor"), args("float", 8, "tensor")),
                                fmt="float-quantized"), "fp8_tensor_static"),
    "ct FP8_DYNAMIC (channel)": (hf.QWEN3_30B_A3B_FP8_DYNAMIC["quantization_config"], "fp8_channel"),
    "ct FP8_BLOCK": (ct(group(args("float", 8, "block", block_structure=[128, 128]),
                              args("float", 8, "group", dynamic=True, group_size=128)), fmt="float-quantized"),
                     "fp8_block"),
    "ct NVFP4 by format": (ct(group(args("float", 4, "tensor_group", group_size=16), NVFP4_ACT),
                              fmt="nvfp4-pack-quantized"), "nvfp4"),
    "ct NVFP4 by fp4 group 16": (ct(group(args("float", 4, "group", group_size=16),
                                          args("float", 4, "group", dynamic=True, group_size=16)),
                                    fmt="mixed-precision"), "nvfp4"),
    "ct expert group beats lm_head group": (
        ct(group(args("float", 8, "channel"), None, targets=["re:.*lm_head"]),
           group(args("int", 4, "group", group_size=32), None, targets=["re:.*mlp.experts.*"]), fmt="pack-quantized"),
        "int4_w4a16_g32"),
    "ct Linear group beats lm_head group": (
        ct(group(args("int", 4, "group", group_size=128), None),
           group(args("int", 8, "channel"), None, targets=["re:.*lm_head"]), fmt="pack-quantized"),
        "int4_w4a16"),
    "modelopt FP8": ({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": None}, "fp8_tensor_static"),
    "modelopt NVFP4 nested": ({"quant_method": "modelopt", "quantization": {"quant_algo": "NVFP4", "group_size": 16}},
                              "nvfp4"),
}


@pytest.mark.parametrize("case", QUANT_CASES)
def test_quantization_config_gives_scheme(case: str) -> None:
    qc, scheme = QUANT_CASES[case]
    base = dict(hf.QWEN3_30B_A3B)
    if qc is not None:
        base["quantization_config"] = qc
    assert MoEConfig.from_hf(base).scheme.name == scheme


# Errors: (config changes, field, full message) ----------------------------------------------
DROP = object()


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {k: v for k, v in base.items() if changes.get(k) is not DROP}
    out.update({k: v for k, v in changes.items() if v is not DROP})
    return out


def _qwen_quant(qc: dict[str, Any]) -> dict[str, Any]:
    return _with(hf.QWEN3_30B_A3B, quantization_config=qc)


CT_GROUP0 = "quantization_config.config_groups.group_0"
FAMILIES = ("deepseek_v2, deepseek_v3, deepseek_v32, dots1, ernie4_5_moe, flex_olmo, glm4_moe, glm4_moe_lite, "
            "glm4v_moe_text, gpt_oss, granitemoe, granitemoeshared, hunyuan_v1_moe, kimi_k2, llama4_text, minimax, "
            "minimax_m2, mixtral, olmoe, phimoe, qwen2_moe, qwen3_5_moe_text, qwen3_moe, qwen3_next, "
            "qwen3_vl_moe_text")
CT_SCHEMES = ("fp8_block, fp8_channel, fp8_tensor, fp8_tensor_static, int4_w4a16, int8_w8a16, int8_w8a16_group, "
              "int8_w8a8, nvfp4, w4a8_fp8, w4a8_int8")
ERROR_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown model_type": (_with(hf.MIXTRAL_8X7B, model_type="llama"), "model_type",
                           f"model_type: unsupported model_type 'llama' (allowed: {FAMILIES})"),
    "no model_type": (_with(hf.MIXTRAL_8X7B, model_type=DROP), "model_type",
                      f"model_type: missing from config.json (allowed: {FAMILIES})"),
    "wrapper around an unknown text model": (
        {"model_type": "llava", "text_config": {"model_type": "llama"}}, "model_type",
        f"model_type: unsupported model_type 'llava' (allowed: {FAMILIES})"),
    "mixtral without experts": (
        _with(hf.MIXTRAL_8X7B, num_local_experts=DROP), "num_local_experts",
        "num_local_experts: missing from the mixtral config.json (it gives MoEConfig.num_experts)"),
    "qwen without moe_intermediate_size": (
        _with(hf.QWEN3_30B_A3B, moe_intermediate_size=DROP), "moe_intermediate_size",
        "moe_intermediate_size: missing from the qwen3_moe config.json (it gives MoEConfig.intermediate_size)"),
    "gpt-oss top-k keys disagree": (
        _with(hf.GPT_OSS_20B, num_experts_per_tok=2), "experts_per_token",
        "experts_per_token: contradicting keys experts_per_token=4, num_experts_per_tok=2"),
    "unknown hidden_act": (
        _with(hf.MIXTRAL_8X7B, hidden_act="gelu_pytorch_tanh"), "hidden_act",
        "hidden_act: unsupported expert activation 'gelu_pytorch_tanh' (allowed: gelu, silu, swish)"),
    "norm_topk_prob not a bool": (
        _with(hf.QWEN3_30B_A3B, norm_topk_prob="yes"), "norm_topk_prob", "norm_topk_prob: must be true or false, got 'yes'"),
    "DeepSeek-V4 scoring": (
        _with(hf.DEEPSEEK_V3, scoring_func="sqrtsoftplus"), "scoring_func",
        "scoring_func: unsupported 'sqrtsoftplus' (allowed: softmax, sigmoid)"),
    "unknown topk_method": (
        _with(hf.DEEPSEEK_V3, topk_method="hash"), "topk_method",
        "topk_method: unsupported 'hash' (allowed: greedy, group_limited_greedy, noaux_tc)"),
    "group_limited_greedy without groups": (
        _with(hf.DEEPSEEK_V2, n_group=1), "n_group",
        "n_group: topk_method 'group_limited_greedy' needs n_group > 1, got 1"),
    "groups without topk_group": (
        _with(hf.DEEPSEEK_V2, topk_group=DROP), "topk_group",
        "topk_group: missing; topk_method 'group_limited_greedy' with n_group=8 needs it"),
    "routed_scaling_factor as text": (
        _with(hf.DEEPSEEK_V3, routed_scaling_factor="2.5"), "routed_scaling_factor",
        "routed_scaling_factor: must be a number, got '2.5'"),
    "fp8 torch_dtype": (
        _with(hf.MIXTRAL_8X7B, torch_dtype="float8_e4m3fn"), "torch_dtype",
        "torch_dtype: unsupported compute dtype 'float8_e4m3fn' (allowed: bfloat16, float16, float32)"),
    "gptq": (
        _qwen_quant({"bits": 4, "group_size": 128, "quant_method": "gptq"}), "quantization_config.quant_method",
        "quantization_config.quant_method: unsupported 'gptq' "
        "(allowed: compressed-tensors, fbgemm_fp8, fp8, modelopt, mxfp4)"),
    "no quant_method": (
        _qwen_quant({"bits": 4}), "quantization_config.quant_method",
        "quantization_config.quant_method: unsupported None (allowed: compressed-tensors, fbgemm_fp8, fp8, modelopt, mxfp4)"),
    "fp8 block 64x64": (
        _qwen_quant({"quant_method": "fp8", "weight_block_size": [64, 64]}), "quantization_config.weight_block_size",
        "quantization_config.weight_block_size: unsupported block [64, 64] (allowed: [128, 128])"),
    "fp8 block with static activations": (
        _qwen_quant({"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]}),
        "quantization_config.activation_scheme",
        "quantization_config.activation_scheme: block-scaled fp8 needs dynamic activations, got 'static'"),
    "fp8 e5m2": (
        _qwen_quant({"quant_method": "fp8", "fmt": "e5m2"}), "quantization_config.fmt",
        "quantization_config.fmt: unsupported fp8 format 'e5m2' (allowed: e4m3)"),
    "modelopt W4A8_AWQ": (
        _qwen_quant({"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"}), "quantization_config.quant_algo",
        "quantization_config.quant_algo: unsupported 'W4A8_AWQ' (allowed: FP8, FP8_PER_CHANNEL_PER_TOKEN, NVFP4)"),
    "ct without groups": (
        _qwen_quant({"quant_method": "compressed-tensors", "format": "pack-quantized"}),
        "quantization_config.config_groups",
        "quantization_config.config_groups: missing or empty in a compressed-tensors config"),
    "ct int4 group 256": (
        _qwen_quant(ct(group(args("int", 4, "group", group_size=256), None), fmt="pack-quantized")),
        f"{CT_GROUP0}.weights.group_size", f"{CT_GROUP0}.weights.group_size: unsupported 256 (allowed: 32, 64, 128)"),
    "ct int4 per channel": (
        _qwen_quant(ct(group(args("int", 4, "channel"), None), fmt="pack-quantized")), CT_GROUP0,
        f"{CT_GROUP0}: weights int4 channel static with activations unquantized is not a supported scheme "
        f"(allowed: {CT_SCHEMES})"),
    "ct group act-order": (
        _qwen_quant(ct(group(args("int", 4, "group", group_size=128, actorder="group"), None), fmt="pack-quantized")),
        f"{CT_GROUP0}.weights.actorder",
        f"{CT_GROUP0}.weights.actorder: 'group' act-order needs a g_idx permutation that the canonical layout does "
        "not carry (allowed: None, weight, static)"),
    "ct NVFP4A16": (
        _qwen_quant(ct(group(args("float", 4, "tensor_group", group_size=16), None), fmt="nvfp4-pack-quantized")),
        CT_GROUP0, f"{CT_GROUP0}: weights float4 tensor_group static with activations unquantized is not a "
                   f"supported scheme (allowed: {CT_SCHEMES})"),
    "ct asymmetric int8 activations": (
        _qwen_quant(ct(group(args("int", 8, "channel"), args("int", 8, "token", dynamic=True, symmetric=False)),
                       fmt="int-quantized")),
        f"{CT_GROUP0}.input_activations.symmetric",
        f"{CT_GROUP0}.input_activations.symmetric: asymmetric activations are not supported"),
    "ct asymmetric fp8 weights": (
        _qwen_quant(ct(group(args("float", 8, "channel", symmetric=False), FP8_TOKEN), fmt="float-quantized")),
        f"{CT_GROUP0}.weights.symmetric", f"{CT_GROUP0}.weights.symmetric: fp8_channel weights must be symmetric, got false"),
    "ct fp8 block 64": (
        _qwen_quant(ct(group(args("float", 8, "block", block_structure=[64, 64]),
                             args("float", 8, "group", dynamic=True, group_size=128)), fmt="float-quantized")),
        f"{CT_GROUP0}.weights.block_structure",
        f"{CT_GROUP0}.weights.block_structure: fp8_block needs (128, 128), got (64, 64)"),
    "ct two Linear groups": (
        _qwen_quant(ct(group(args("int", 8, "channel"), None), group(args("int", 4, "group", group_size=128), None),
                       fmt="pack-quantized")),
        "quantization_config.config_groups",
        "quantization_config.config_groups: cannot tell which of the groups group_0, group_1 quantizes the experts; "
        "pass quant=..."),
    # What a family's code needs and a MoEConfig cannot express
    "Llama 4 with two experts per token": (
        {**hf.LLAMA_4_SCOUT, "text_config": _with(hf.LLAMA_4_SCOUT["text_config"], num_experts_per_tok=2)},
        "num_experts_per_tok",
        "num_experts_per_tok: Llama 4 scales each token's input by its router weight, which a MoEConfig expresses "
        "for 1 expert per token only, got 2; pass apply_router_weight_on_input=False only if the weights are "
        "applied after the experts"),
    "Hunyuan top-k differing across layers": (
        _with(hf.HUNYUAN_A13B, moe_topk=[8] * 31 + [4]), "moe_topk",
        "moe_topk: differs across layers (4, 8); a MoEConfig is one layer: pass top_k=... for the layer you want"),
    "Hunyuan empty moe_topk": (
        _with(hf.HUNYUAN_A13B, moe_topk=[]), "moe_topk",
        "moe_topk: is an empty list; expected a positive int or one per layer"),
    "Hunyuan moe_intermediate_size against intermediate_size": (
        _with(hf.HUNYUAN_A13B, moe_intermediate_size=[2048] * 32), "moe_intermediate_size",
        "moe_intermediate_size: 2048 contradicts intermediate_size=3072, which sizes the experts in transformers"),
    "ERNIE moe_norm_min that would clamp": (
        _with(hf.ERNIE_4_5_21B_A3B, moe_norm_min=0.5), "moe_norm_min",
        "moe_norm_min: 0.5 exceeds moe_k / moe_num_experts = 6/64: the router's clamp of the weights' sum would "
        "act, and RoutingConfig renormalizes unclamped"),
    "GLM topk_group over n_group": (
        _with(hf.GLM_4_5_AIR, n_group=4, topk_group=8), "topk_group", "topk_group: 8 exceeds n_group=4"),
    "ERNIE per-modality expert sizes (VL)": (
        _with(hf.ERNIE_4_5_21B_A3B, moe_intermediate_size=[1536, 512]), "moe_intermediate_size",
        "moe_intermediate_size: must be a positive int, got [1536, 512]"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_config_raises_config_error_naming_the_key(case: str) -> None:
    config, field, message = ERROR_CASES[case]
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$") as err:
        MoEConfig.from_hf(config)
    assert err.value.field == field


def test_unknown_override_lists_the_fields() -> None:
    with pytest.raises(ConfigError, match=r"^overrides: unknown MoEConfig field\(s\) experts \(allowed: num_experts, "
                                          r"top_k, .*apply_router_weight_on_input\)$"):
        MoEConfig.from_hf(hf.MIXTRAL_8X7B, experts=4)


def test_an_invalid_override_fails_in_moe_config() -> None:
    with pytest.raises(ConfigError, match=r"^top_k: 9 exceeds num_experts=8$"):
        MoEConfig.from_hf(hf.MIXTRAL_8X7B, top_k=9)


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^source: no config.json at {re.escape(str(tmp_path / 'config.json'))}$"):
        MoEConfig.from_hf(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^source: {re.escape(str(broken))} is not valid JSON: "):
        MoEConfig.from_hf(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^source: {re.escape(str(listed))} holds a JSON list, expected an object$"):
        MoEConfig.from_hf(listed)
    with pytest.raises(ConfigError, match=r"^source: expected a path or a dict, got int$"):
        MoEConfig.from_hf(42)  # type: ignore[arg-type]


# Issue 13, item 7: wrongly typed or undecodable configs are ConfigErrors naming the key -------------
NAN = float("nan")
TYPE_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "model_type as a list": (
        _with(hf.MIXTRAL_8X7B, model_type=["mixtral"]), "model_type",
        f"model_type: unsupported model_type ['mixtral'] (allowed: {FAMILIES})"),
    "NaN hidden_size": (_with(hf.MIXTRAL_8X7B, hidden_size=NAN), "hidden_size", "hidden_size: must be a positive int, got nan"),
    "NaN top-k in one of two keys": (
        _with(hf.GPT_OSS_20B, num_experts_per_tok=NAN), "num_experts_per_tok",
        "num_experts_per_tok: must be a positive int, got nan"),
    "hidden_size as text": (
        _with(hf.MIXTRAL_8X7B, hidden_size="4096"), "hidden_size", "hidden_size: must be a positive int, got '4096'"),
    "hidden_act as a list": (
        _with(hf.MIXTRAL_8X7B, hidden_act=["silu"]), "hidden_act",
        "hidden_act: unsupported expert activation ['silu'] (allowed: gelu, silu, swish)"),
    "NaN routed_scaling_factor": (
        _with(hf.DEEPSEEK_V3, routed_scaling_factor=NAN), "routed_scaling_factor",
        "routed_scaling_factor: must be a finite number, got nan"),
    "inf swiglu_limit": (
        _with(hf.GPT_OSS_20B, swiglu_limit=float("inf")), "swiglu_limit", "swiglu_limit: must be a finite number, got inf"),
    "huge routed_scaling_factor": (
        _with(hf.DEEPSEEK_V3, routed_scaling_factor=10 ** 400), "routed_scaling_factor",
        "routed_scaling_factor: must be a finite number, got an int of 1329 bits"),
    "n_group as text": (_with(hf.DEEPSEEK_V3, n_group="8"), "n_group", "n_group: must be a positive int, got '8'"),
    "scoring_func as a list": (
        _with(hf.DEEPSEEK_V3, scoring_func=["sigmoid"]), "scoring_func",
        "scoring_func: unsupported ['sigmoid'] (allowed: softmax, sigmoid)"),
    "quant_method as a list": (
        _qwen_quant({"quant_method": ["fp8"]}), "quantization_config.quant_method",
        "quantization_config.quant_method: unsupported ['fp8'] (allowed: compressed-tensors, fbgemm_fp8, fp8, "
        "modelopt, mxfp4)"),
    "weight_block_size as an int": (
        _qwen_quant({"quant_method": "fp8", "weight_block_size": 128}), "quantization_config.weight_block_size",
        "quantization_config.weight_block_size: unsupported block 128 (allowed: [128, 128])"),
    "modelopt quant_algo as a dict": (
        _qwen_quant({"quant_method": "modelopt", "quant_algo": {"a": 1}}), "quantization_config.quant_algo",
        "quantization_config.quant_algo: unsupported {'a': 1} (allowed: FP8, FP8_PER_CHANNEL_PER_TOKEN, NVFP4)"),
    "config_groups entry not an object": (
        _qwen_quant({"quant_method": "compressed-tensors", "config_groups": {"group_0": 5}}), CT_GROUP0,
        f"{CT_GROUP0}: expected an object, got int"),
    "config_groups targets not a list": (
        _qwen_quant(ct(group(args("int", 8, "channel"), None, targets=7), group(args("int", 4, "group"), None),  # type: ignore[arg-type]
                       fmt="pack-quantized")), f"{CT_GROUP0}.targets",
        f"{CT_GROUP0}.targets: expected a list of str, got 7"),
    "ct weights not an object": (
        _qwen_quant({"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": [1]}}}),
        f"{CT_GROUP0}.weights", f"{CT_GROUP0}.weights: expected an object, got [1]"),
    "ct num_bits as text": (
        _qwen_quant(ct(group({**args("int", 4, "group"), "num_bits": "4"}, None), fmt="pack-quantized")),
        f"{CT_GROUP0}.weights.num_bits", f"{CT_GROUP0}.weights.num_bits: must be a positive int, got '4'"),
    "ct type as a list": (
        _qwen_quant(ct(group({**args("int", 4, "group"), "type": ["int"]}, None), fmt="pack-quantized")),
        f"{CT_GROUP0}.weights.type", f"{CT_GROUP0}.weights.type: expected a str, got ['int']"),
    "ct block_structure as an int": (
        _qwen_quant(ct(group({**args("float", 8, "block"), "block_structure": 128}, FP8_TOKEN), fmt="float-quantized")),
        f"{CT_GROUP0}.weights.block_structure", f"{CT_GROUP0}.weights.block_structure: expected two ints, got 128"),
}


@pytest.mark.parametrize("case", TYPE_CASES)
def test_wrongly_typed_config_raises_config_error_naming_the_key(case: str) -> None:
    config, field, message = TYPE_CASES[case]
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$") as err:
        MoEConfig.from_hf(config)
    assert err.value.field == field


@pytest.mark.parametrize(("content", "message"), [
    (b"\x00\x01\xff\xfe binary", "is not UTF-8 text (byte 2: invalid start byte)"),
    (json.dumps(hf.MIXTRAL_8X7B).encode("utf-16"), "is not UTF-8 text (byte 0: invalid start byte)"),
    (b'{"model_type": "mixtral", "hidden_size": ' + b"9" * 5000 + b"}", "is not usable JSON: Exceeds the limit"),
    (b"[" * 100000 + b"]" * 100000, "is not usable JSON: maximum recursion depth exceeded"),
])
def test_undecodable_files_are_config_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^source: {re.escape(str(path))} {re.escape(message)}") as err:
        MoEConfig.from_hf(tmp_path)
    assert err.value.field == "source"


# Fuzz: mutated real config files; only ConfigError may escape -------------------------------------------
_REAL = [hf.MIXTRAL_8X7B, hf.QWEN2_57B_A14B, hf.QWEN3_30B_A3B, hf.DEEPSEEK_V2, hf.DEEPSEEK_V3, hf.GPT_OSS_20B,
         hf.KIMI_K2_6, hf.QWEN3_30B_A3B_FP8_DYNAMIC, hf.OLMOE_1B_7B, hf.GLM_4_5_AIR, hf.QWEN3_NEXT_80B_A3B,
         hf.LLAMA_4_SCOUT, hf.PHI_3_5_MOE, hf.GRANITE_3_0_1B_A400M, hf.MINIMAX_TEXT_01, hf.ERNIE_4_5_21B_A3B,
         hf.HUNYUAN_A13B, hf.DOTS_LLM1]
_ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1, 3, 2.5, NAN, float("inf"), -float("inf"), 10 ** 400, "",
                          "x", "silu", "fp8", "mixtral", [], [1], [128, 128], ["a", 1], {}, {"a": 1}, {"type": "int"}]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(config: dict[str, Any], rng: Any) -> dict[str, Any]:
    """1-3 mutations: replace a value anywhere (odd values), delete a key, or graft a whole subtree
    from another real config under a random key."""
    out = json.loads(json.dumps(config))
    for _ in range(rng.randint(1, 3)):
        paths = _paths(out)
        path = rng.choice(paths)
        parent: Any = out
        for key in path[:-1]:
            parent = parent[key]
        op = rng.random()
        if op < 0.7:
            parent[path[-1]] = rng.choice(_ODD_VALUES)
        elif op < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            donor = rng.choice(_REAL)
            parent[path[-1]] = json.loads(json.dumps(donor.get(rng.choice(list(donor)))))
    return out


def test_fuzz_from_hf_only_raises_config_error() -> None:
    import random

    rng = random.Random(13)
    outcomes = {"ok": 0, "config_error": 0}
    for i in range(400):
        mutated = _mutate(rng.choice(_REAL), rng)
        try:
            MoEConfig.from_hf(mutated)
            outcomes["ok"] += 1
        except ConfigError:
            outcomes["config_error"] += 1
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"case {i}: {type(exc).__name__}: {exc}\n{json.dumps(mutated)[:2000]}") from exc
    assert outcomes["ok"] > 10 and outcomes["config_error"] > 100, outcomes


def test_fuzz_from_hf_files_only_raises_config_error(tmp_path: Path) -> None:
    """Byte-level damage to real files: truncation, flipped bytes, other encodings."""
    import random

    rng = random.Random(7)
    path = tmp_path / "config.json"
    for i in range(150):
        data = bytearray(json.dumps(rng.choice(_REAL)).encode())
        op = i % 3
        if op == 0:
            data = data[:rng.randrange(len(data))]
        elif op == 1:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data = bytearray(data.decode().encode(rng.choice(["utf-16", "utf-32", "latin-1", "utf-8-sig"])))
        path.write_bytes(bytes(data))
        try:
            MoEConfig.from_hf(path)
        except ConfigError:
            pass
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"case {i}: {type(exc).__name__}: {exc}\n{bytes(data)[:500]!r}") from exc

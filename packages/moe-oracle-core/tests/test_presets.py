"""Presets: each named model equals ``from_hf`` of its published config.json; overrides apply alike."""

from typing import Any

import hf_configs as hf
import pytest
import torch

from moe_oracle import ConfigError, MoEConfig, ParallelConfig
from moe_oracle.config.presets import PRESETS

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "mixtral-8x7b": hf.MIXTRAL_8X7B,
    "mixtral-8x22b": hf.MIXTRAL_8X22B,
    "qwen3-30b-a3b": hf.QWEN3_30B_A3B,
    "qwen3-235b-a22b": hf.QWEN3_235B_A22B,
    "qwen2-57b-a14b": hf.QWEN2_57B_A14B,
    "deepseek-v3": hf.DEEPSEEK_V3,
    "gpt-oss-20b": hf.GPT_OSS_20B,
    "gpt-oss-120b": hf.GPT_OSS_120B,
}


def test_every_model_preset_has_its_config() -> None:
    assert set(PRESETS) - set(MODEL_CONFIGS) == {"tiny"}


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_preset_equals_from_hf_of_the_published_config(name: str) -> None:
    assert MoEConfig.preset(name) == MoEConfig.from_hf(MODEL_CONFIGS[name])


@pytest.mark.parametrize(("name", "scheme"), [
    ("mixtral-8x7b", "bf16"), ("qwen3-30b-a3b", "bf16"), ("deepseek-v3", "fp8_block"), ("gpt-oss-20b", "mxfp4"),
])
def test_presets_carry_the_checkpoint_quantization(name: str, scheme: str) -> None:
    assert MoEConfig.preset(name).scheme.name == scheme


@pytest.mark.parametrize("overrides", [
    dict(quant="bf16"),
    dict(quant="fp16"),
    dict(dtype="fp16"),
    dict(quant="fp8_channel", dtype="fp32"),
    dict(parallel=ParallelConfig(tp_size=2, ep_size=4, ep_rank=1)),
])
def test_overrides_apply_as_in_from_hf(overrides: dict[str, Any]) -> None:
    for name in ("deepseek-v3", "gpt-oss-120b"):
        assert MoEConfig.preset(name, **overrides) == MoEConfig.from_hf(MODEL_CONFIGS[name], **overrides)


def test_unquantized_quant_override_sets_dtype() -> None:
    half = MoEConfig.preset("gpt-oss-20b", quant="fp16")
    assert half.scheme.name == "fp16" and half.dtype == torch.float16
    with pytest.raises(ConfigError, match=r"^quant: unquantized scheme 'fp16' contradicts dtype=bf16$"):
        MoEConfig.preset("gpt-oss-20b", quant="fp16", dtype="bf16")


def test_tiny_is_small_and_unquantized() -> None:
    tiny = MoEConfig.preset("tiny")
    assert (tiny.num_experts, tiny.top_k, tiny.hidden_size, tiny.intermediate_size) == (8, 2, 256, 512)
    assert tiny.scheme.name == "bf16" and tiny.activation == "silu"
    assert tiny.num_experts * tiny.w13_rows * tiny.hidden_size * 3 // 2 < 4_000_000  # w13 + w2 parameters


def test_names_are_case_and_space_insensitive() -> None:
    assert MoEConfig.preset(" Mixtral-8x7B ") == MoEConfig.preset("mixtral-8x7b")


def test_unknown_preset_lists_the_known_ones() -> None:
    known = ", ".join(sorted(PRESETS))
    with pytest.raises(ConfigError, match=rf"^preset: unknown preset 'llama-3' \(allowed: {known}\)$") as err:
        MoEConfig.preset("llama-3")
    assert err.value.field == "preset" and err.value.allowed == tuple(sorted(PRESETS))
    with pytest.raises(ConfigError, match=rf"^preset: expected a preset name \(str\), got int \(allowed: {known}\)$"):
        MoEConfig.preset(3)  # type: ignore[arg-type]

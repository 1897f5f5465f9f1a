"""Named model layers, as plain data beside the config class.

Each named model is the MoE layer of its published checkpoint, quantization included (DeepSeek-V3
ships fp8 block-scaled, gpt-oss mxfp4): ``MoEConfig.from_hf`` of that checkpoint's ``config.json``
gives the same config. Override ``quant=`` for another scheme, e.g. ``preset("gpt-oss-20b", quant="bf16")``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from moe_oracle.config.hf import apply_overrides
from moe_oracle.config.moe import MoEConfig
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.errors import ConfigError

_MOE_FIELDS = tuple(f.name for f in dataclasses.fields(MoEConfig))
_DEEPSEEK_V3_ROUTING = RoutingConfig(
    scoring="sigmoid", renormalize=True, num_expert_groups=8, topk_groups=4,
    score_correction_bias=True, routed_scaling_factor=2.5,
)
_GPT_OSS_ROUTING = RoutingConfig(softmax_after_topk=True)

PRESETS: dict[str, dict[str, Any]] = {
    "mixtral-8x7b": dict(num_experts=8, top_k=2, hidden_size=4096, intermediate_size=14336),
    "mixtral-8x22b": dict(num_experts=8, top_k=2, hidden_size=6144, intermediate_size=16384),
    "qwen3-30b-a3b": dict(num_experts=128, top_k=8, hidden_size=2048, intermediate_size=768),
    "qwen3-235b-a22b": dict(num_experts=128, top_k=8, hidden_size=4096, intermediate_size=1536),
    "qwen2-57b-a14b": dict(num_experts=64, top_k=8, hidden_size=3584, intermediate_size=2560,
                           routing=RoutingConfig(renormalize=False)),
    "deepseek-v3": dict(num_experts=256, top_k=8, hidden_size=7168, intermediate_size=2048,
                        quant="fp8_block", routing=_DEEPSEEK_V3_ROUTING),
    "gpt-oss-20b": dict(num_experts=32, top_k=4, hidden_size=2880, intermediate_size=2880, quant="mxfp4",
                        activation="swigluoai", has_bias=True, routing=_GPT_OSS_ROUTING),
    "gpt-oss-120b": dict(num_experts=128, top_k=4, hidden_size=2880, intermediate_size=2880, quant="mxfp4",
                         activation="swigluoai", has_bias=True, routing=_GPT_OSS_ROUTING),
    # Small enough to run every backend in seconds on a 2-core CPU; for demos and tests.
    "tiny": dict(num_experts=8, top_k=2, hidden_size=256, intermediate_size=512),
}


def preset(name: str, **overrides: Any) -> MoEConfig:
    """The named layer with ``overrides`` applied, as ``MoEConfig.from_hf`` applies them.

    An unquantized ``quant`` override (``"bf16"``, ``"fp16"``, ``"fp32"``) sets ``dtype`` too
    unless ``dtype`` is given, so ``preset("gpt-oss-20b", quant="fp16")`` is an fp16 layer.
    """
    if not isinstance(name, str):
        raise ConfigError("preset", f"expected a preset name (str), got {type(name).__name__}", allowed=sorted(PRESETS))
    key = name.strip().lower()
    if key not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}", allowed=sorted(PRESETS))
    unknown = sorted(set(overrides) - set(_MOE_FIELDS))
    if unknown:
        raise ConfigError("overrides", f"unknown MoEConfig field(s) {', '.join(unknown)}", allowed=_MOE_FIELDS)
    return MoEConfig(**apply_overrides(PRESETS[key], overrides))

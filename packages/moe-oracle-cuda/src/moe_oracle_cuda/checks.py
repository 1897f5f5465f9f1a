"""Rule conditions and constants shared by the FlashInfer backends; the per-scheme support checks they
use (capability, activations, biases, clamp, multiples) are core's, from ``moe_oracle.plugin``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moe_oracle.plugin import capability_major, config_where, ep_size_above, scheme_in

if TYPE_CHECKING:
    from moe_oracle.plugin import MoEConfig

UNQUANTIZED = ("bf16", "fp16", "fp32")
FLASHINFER_LIBRARY = {"flashinfer": "flashinfer-python"}

# Conditions of the priority rules ----------------------------------------------------------------
HOPPER = capability_major(9)
UNQUANTIZED_SCHEME = scheme_in(*UNQUANTIZED)
FP8_BLOCK = scheme_in("fp8_block")
MXFP4_FAMILY = scheme_in("mxfp4", "mxfp4_a8")


def is_gpt_oss(config: MoEConfig) -> bool:
    """gpt-oss's MoE: the clamped swigluoai activation with biases on both GEMMs."""
    return config.activation == "swigluoai" and config.has_bias


GPT_OSS = config_where("gpt-oss (swigluoai with biases)", is_gpt_oss)
EXPERT_PARALLEL = ep_size_above(1)

"""Spec of ``flashinfer_trtllm``: TRT-LLM-gen MoE cubins run on capability 10.x only.

Facts (vLLM 0.33, FlashInfer 0.6.13): at most 2048 experts; bf16 needs the intermediate size
padded to a multiple of 128 (the converter pads it and returns the padded config); there is no
routed (precomputed top-k) fp8 per-tensor kernel, so that scheme needs an in-kernel router and no
all-to-all; the fp8 per-tensor kernel takes no clamp limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moe_oracle.plugin import (
    BackendSpec,
    Check,
    Support,
    activations_by_scheme,
    bias_schemes,
    capability_family,
    clamp_schemes,
    dtypes,
    max_experts,
    multiple_of,
    no_router_weight_on_input,
)
from moe_oracle_cuda.checks import FLASHINFER_LIBRARY
from moe_oracle_cuda.flashinfer_trtllm.routing import uses_routed_kernel
from moe_oracle_cuda.version import PLUGIN_API

BACKEND = "flashinfer_trtllm"

if TYPE_CHECKING:
    from moe_oracle.plugin import MoEConfig, Platform

TRTLLM_RANK = 10
MAX_EXPERTS = 2048
ACTIVATIONS = {
    "bf16": frozenset({"silu", "swigluoai", "relu2"}),
    "fp8_tensor_static": frozenset({"silu"}), "fp8_block": frozenset({"silu"}),
    "nvfp4": frozenset({"silu", "relu2"}),
    "mxfp4": frozenset({"silu", "swigluoai"}), "mxfp4_a8": frozenset({"silu", "swigluoai"}),
}
BIAS_SCHEMES = frozenset({"mxfp4", "mxfp4_a8", "nvfp4"})
CLAMP_SCHEMES = frozenset({"bf16", "fp8_block", "mxfp4", "mxfp4_a8", "nvfp4"})
ROUTED_SCHEMES = frozenset({"bf16", "fp8_block", "mxfp4", "mxfp4_a8", "nvfp4"})


def _router(config: MoEConfig, platform: Platform) -> Support:
    if not uses_routed_kernel(config) or config.scheme.base_name in ROUTED_SCHEMES:
        return Support.yes()
    why = (f"all2all={config.parallel.all2all!r} hands it routed tokens" if config.parallel.use_all2all_kernels
           else f"no in-kernel router computes {config.routing!r}")
    return Support.no(f"{config.scheme.base_name} has only the monolithic TRTLLM kernel (no routed variant) and {why}")


FLASHINFER_TRTLLM_SPEC = BackendSpec(
    name=BACKEND,
    plugin_api=PLUGIN_API,
    experts="moe_oracle_cuda.flashinfer_trtllm.experts:FlashInferTrtllmExperts",
    converter="moe_oracle_cuda.flashinfer_trtllm.converter:convert",
    vendors=frozenset({"cuda"}),
    schemes=frozenset(ACTIVATIONS),
    activations=frozenset().union(*ACTIVATIONS.values()),
    rank=TRTLLM_RANK,
    libraries=FLASHINFER_LIBRARY,
    checks=(
        capability_family(10),
        dtypes("bf16"),
        max_experts(MAX_EXPERTS),
        activations_by_scheme(ACTIVATIONS),
        bias_schemes(BIAS_SCHEMES),
        clamp_schemes(CLAMP_SCHEMES),
        multiple_of("intermediate_size_per_partition", lambda c: c.intermediate_size_per_partition, 128,
                    frozenset({"fp8_block"}), "128-row weight blocks must not straddle gate and up"),
        multiple_of("hidden_size", lambda c: c.hidden_size, 128,
                    frozenset({"bf16", "fp8_tensor_static", "fp8_block", "nvfp4"}),
                    "128-byte K blocks and 128-row epilogue tiles"),
        no_router_weight_on_input(),
        Check("an in-kernel router or a routed kernel", _router),
    ),
    description="FlashInfer TRT-LLM-gen MoE cubins (trtllm_*_moe); routes inside the kernel when it can",
)

"""Spec of ``flashinfer_cutlass``: which schemes run on which capability, and with what.

Capabilities follow vLLM 0.33's FlashInferExperts: 9.0 serves bf16/fp16, fp8 per tensor (static
activation scale), fp8 128x128 blocks and mxfp4 weights with bf16 activations; 10.x and 12.x
serve bf16/fp16, fp8 per tensor, nvfp4 and mxfp4 weights with mxfp8 activations; 11.x nothing.
"""

from __future__ import annotations

from moe_oracle.plugin import (
    SM10X,
    SM12X,
    SM90,
    BackendSpec,
    activations_by_scheme,
    bias_schemes,
    capability_by_scheme,
    clamp_schemes,
    dtypes,
    multiple_of,
    no_router_weight_on_input,
)
from moe_oracle_cuda.checks import FLASHINFER_LIBRARY
from moe_oracle_cuda.version import PLUGIN_API

BACKEND = "flashinfer_cutlass"

CUTLASS_RANK = 20
ANY_ARCH = (SM90, SM10X, SM12X)
CAPABILITIES = {
    "bf16": ANY_ARCH, "fp16": ANY_ARCH, "fp8_tensor_static": ANY_ARCH,
    "fp8_block": (SM90,), "mxfp4": (SM90,),
    "mxfp4_a8": (SM10X, SM12X), "nvfp4": (SM10X, SM12X),
}
GATED = frozenset({"silu", "swigluoai"})
ACTIVATIONS = {
    "bf16": GATED | {"relu2"}, "fp16": GATED | {"relu2"},
    "fp8_tensor_static": frozenset({"silu", "relu2"}), "fp8_block": frozenset({"silu"}),
    "mxfp4": GATED, "mxfp4_a8": GATED, "nvfp4": GATED | {"relu2"},
}
BIAS_SCHEMES = frozenset({"bf16", "fp16", "mxfp4", "mxfp4_a8", "nvfp4"})
CLAMP_SCHEMES = frozenset({"bf16", "fp16", "fp8_tensor_static", "mxfp4", "mxfp4_a8", "nvfp4"})

FLASHINFER_CUTLASS_SPEC = BackendSpec(
    name=BACKEND,
    plugin_api=PLUGIN_API,
    experts="moe_oracle_cuda.flashinfer_cutlass.experts:FlashInferCutlassExperts",
    converter="moe_oracle_cuda.flashinfer_cutlass.converter:convert",
    vendors=frozenset({"cuda"}),
    schemes=frozenset(CAPABILITIES),
    activations=frozenset().union(*ACTIVATIONS.values()),
    rank=CUTLASS_RANK,
    libraries=FLASHINFER_LIBRARY,
    checks=(
        capability_by_scheme(CAPABILITIES),
        dtypes("bf16", "fp16"),
        activations_by_scheme(ACTIVATIONS),
        bias_schemes(BIAS_SCHEMES),
        clamp_schemes(CLAMP_SCHEMES),
        multiple_of("intermediate_size_per_partition", lambda c: c.intermediate_size_per_partition, 128,
                    frozenset({"fp8_block"}), "128-row weight blocks must not straddle gate and up"),
        multiple_of("hidden_size", lambda c: c.hidden_size, 128, frozenset({"fp8_block", "nvfp4"}),
                    "the kernel's K alignment for block-scaled weights"),
        no_router_weight_on_input(),
    ),
    description="FlashInfer CUTLASS grouped GEMM MoE (cutlass_fused_moe); routing done by the caller",
)

"""Spec of ``cpu_zentorch``: AMD zentorch's fused-MoE op on AMD CPUs (the ``[zen]`` extra)."""

from __future__ import annotations

from moe_oracle.plugin import (
    GPT_OSS_SWIGLU_ALPHA,
    GPT_OSS_SWIGLU_LIMIT,
    BackendSpec,
    Check,
    MoEConfig,
    Platform,
    Support,
    dtype_name,
    matches_torch,
)
from moe_oracle_cpu.version import PLUGIN_API

BACKEND = "cpu_zentorch"
ZENTORCH_RANK = 20


def _amd(config: MoEConfig, platform: Platform) -> Support:
    if "amd" not in platform.features:
        return Support.no("needs an AMD CPU (zentorch's kernels target AMD EPYC/Zen), this CPU is not AMD")
    return Support.yes()


def _activation_constants(config: MoEConfig, platform: Platform) -> Support:
    """zentorch's swigluoai has gpt-oss's constants built in, and it has no clamped silu/gelu."""
    if config.activation == "swigluoai":
        if (config.swiglu_alpha, config.swiglu_limit) != (GPT_OSS_SWIGLU_ALPHA, GPT_OSS_SWIGLU_LIMIT):
            return Support.no(f"zentorch's swigluoai has alpha={GPT_OSS_SWIGLU_ALPHA} and limit="
                              f"{GPT_OSS_SWIGLU_LIMIT} built in, config has alpha={config.swiglu_alpha} "
                              f"and limit={config.swiglu_limit}")
    elif config.swiglu_limit is not None:
        return Support.no(f"zentorch has no clamped {config.activation} (swiglu_limit={config.swiglu_limit})")
    if not config.is_gated:
        return Support.no(f"zentorch's {config.activation} is gated only, config is not gated")
    return Support.yes()


def _bf16_needs_avx512_bf16(config: MoEConfig, platform: Platform) -> Support:
    """zentorch 2.13's bf16 fused MoE is wrong on full-size layers without AVX512-BF16: measured on an
    AVX2-only AMD EPYC Zen 3 (../shared/reference/anchor-cpu-avx2.md), relative error 1.4 on Qwen3-30B-A3B
    and Mixtral-8x7B layers at 1 and 16 tokens, NaN for Qwen3 at 16; right on a small layer (E=8,
    H=512, I=256) and in fp32. Its bf16 path is trusted only where it was measured right (Zen 4, AVX512-BF16)."""
    if dtype_name(config.dtype) == "bf16" and "avx512_bf16" not in platform.features:
        return Support.no("zentorch's bf16 fused MoE gave wrong results (relative error 1.4, NaN) on full-size "
                          "layers of a CPU without avx512_bf16 (AVX2-only Zen 3); this CPU lacks avx512_bf16")
    return Support.yes()


def _two_experts(config: MoEConfig, platform: Platform) -> Support:
    if config.num_local_experts < 2:
        return Support.no(f"zentorch_fused_moe needs at least 2 local experts, config has {config.num_local_experts}")
    return Support.yes()


ZENTORCH_SPEC = BackendSpec(
    name=BACKEND,
    experts="moe_oracle_cpu.cpu_zentorch.experts:ZentorchExperts",
    converter="moe_oracle_cpu.cpu_zentorch.converter:convert",
    vendors=frozenset({"cpu"}),
    plugin_api=PLUGIN_API,
    schemes=frozenset({"bf16", "fp32"}),
    activations=frozenset({"silu", "gelu", "swigluoai"}),
    rank=ZENTORCH_RANK,
    libraries={"zentorch": "zentorch"},
    checks=(
        Check("an AMD CPU", _amd),
        matches_torch("zentorch"),
        Check("gated silu/gelu without a limit, or gpt-oss swigluoai", _activation_constants),
        Check("at least 2 local experts", _two_experts),
        Check("avx512_bf16 for bf16", _bf16_needs_avx512_bf16),
    ),
    description="AMD zentorch's zentorch_fused_moe (pip install moe-oracle-cpu[zen]) on AMD EPYC/Zen CPUs",
)

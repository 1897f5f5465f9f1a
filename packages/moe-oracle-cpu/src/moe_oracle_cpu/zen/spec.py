"""Spec of ``cpu_zentorch``: AMD zentorch's fused-MoE op on AMD CPUs (the ``[zen]`` extra)."""

from __future__ import annotations

from importlib import metadata

from moe_oracle.config.moe import GPT_OSS_SWIGLU_ALPHA, GPT_OSS_SWIGLU_LIMIT, MoEConfig
from moe_oracle.platform import Platform
from moe_oracle.spec import BackendSpec
from moe_oracle.support import Check, Support

BACKEND = "cpu_zentorch"
ZENTORCH_RANK = 20


def _amd(config: MoEConfig, platform: Platform) -> Support:
    if "amd" not in platform.features:
        return Support.no("needs an AMD CPU (zentorch's kernels target AMD EPYC/Zen), this CPU is not AMD")
    return Support.yes()


def _matches_torch(config: MoEConfig, platform: Platform) -> Support:
    """zentorch X.Y.* is compiled against torch X.Y: another pair fails to load or misbehaves.
    The platform's torch (a simulated one may name it) else this process's."""
    version = platform.libraries.get("zentorch", "")
    torch_version = (platform.libraries.get("torch") or metadata.version("torch")).split("+")[0]
    if version.split(".")[:2] != torch_version.split(".")[:2]:
        return Support.no(f"zentorch {version} is built for torch {'.'.join(version.split('.')[:2])}, "
                          f"this is torch {torch_version}")
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


def _two_experts(config: MoEConfig, platform: Platform) -> Support:
    if config.num_local_experts < 2:
        return Support.no(f"zentorch_fused_moe needs at least 2 local experts, config has {config.num_local_experts}")
    return Support.yes()


ZENTORCH_SPEC = BackendSpec(
    name=BACKEND,
    experts="moe_oracle_cpu.zen.experts:ZentorchExperts",
    converter="moe_oracle_cpu.zen.converter:convert",
    vendors=frozenset({"cpu"}),
    schemes=frozenset({"bf16", "fp32"}),
    activations=frozenset({"silu", "gelu", "swigluoai"}),
    rank=ZENTORCH_RANK,
    libraries={"zentorch": "zentorch"},
    checks=(
        Check("an AMD CPU", _amd),
        Check("zentorch built for this torch", _matches_torch),
        Check("gated silu/gelu without a limit, or gpt-oss swigluoai", _activation_constants),
        Check("at least 2 local experts", _two_experts),
    ),
    description="AMD zentorch's zentorch_fused_moe (pip install moe-oracle-cpu[zen]) on AMD EPYC/Zen CPUs",
)

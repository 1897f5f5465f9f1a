"""Spec of ``cpu_grouped``: every scheme and activation on every CPU; the CPU backend of last resort
before the reference, and the first where no fused vendor op is installed."""

from __future__ import annotations

from moe_oracle.config.moe import ACTIVATIONS, MoEConfig
from moe_oracle.config.quant import SCHEME_NAMES
from moe_oracle.platform import Platform
from moe_oracle.spec import BackendSpec, PriorityHint
from moe_oracle.support import Condition

BACKEND = "cpu_grouped"
GROUPED_RANK = 30



def _native_runs(config: MoEConfig, platform: Platform) -> bool:
    """The config and CPU fit the native kernels, and (on a real platform) they build here; a
    simulated platform is assumed to have a C compiler."""
    from moe_oracle_cpu.grouped import native  # imports torch

    if native.unsupported(config, platform.features):
        return False
    return platform.simulated or not native.load_error()


NATIVE_KERNELS = Condition("cpu_grouped's native AVX-512 kernels run this config on this CPU", _native_runs)

GROUPED_SPEC = BackendSpec(
    name=BACKEND,
    experts="moe_oracle_cpu.grouped.experts:GroupedExperts",
    converter="moe_oracle_cpu.grouped.converter:convert",
    vendors=frozenset({"cpu"}),
    schemes=frozenset(SCHEME_NAMES),
    activations=frozenset(ACTIVATIONS),
    rank=GROUPED_RANK,
    hints=(PriorityHint(before=("reference",),
                        reason="runs the reference's math with per-expert GEMMs in the compute dtype and "
                               "per-expert dequantization, several times faster than the float32 reference"),),
    environment=("MOE_ORACLE_CPU_NATIVE",),
    description=("tokens sorted by expert once; bf16/fp32: one AVX-512 C call per projection over every expert "
                 "(silu fused, top-k sum in its epilogue), oneDNN-packed per-expert GEMMs without AVX-512 or a C "
                 "compiler; quantized schemes: per-expert GEMMs on weights dequantized one expert tile at a time"),
)

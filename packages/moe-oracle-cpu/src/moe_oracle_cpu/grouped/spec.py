"""Spec of ``cpu_grouped``: every scheme and activation on every CPU; the CPU backend of last resort
before the reference, and the first where no fused vendor op is installed."""

from __future__ import annotations

from moe_oracle.config.moe import ACTIVATIONS
from moe_oracle.config.quant import SCHEME_NAMES
from moe_oracle.spec import BackendSpec, PriorityHint

BACKEND = "cpu_grouped"
GROUPED_RANK = 30

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
    description=("tokens sorted by expert once, per-expert GEMMs on contiguous slices (oneDNN-packed for "
                 "bf16/fp32, dequantized per expert tile for quantized schemes), top-k sum by index_add"),
)

"""The CPU backends' order, as hints with reasons (shown by ``moe-oracle explain``).

Base ranks: ``cpu_amx`` 10, ``cpu_zentorch`` 20, ``cpu_grouped`` 30; core's reference is last and
the Triton interpreter just before it. The hints below restate the order as rules, each with the
measurement or fact behind it, so ``explain`` shows why one CPU backend precedes another.
"""

from __future__ import annotations

from moe_oracle.spec import PriorityHint
from moe_oracle_cpu.amx.spec import HAS_AMX_KERNEL


def cpu_hints() -> list[PriorityHint]:
    return [
        PriorityHint(
            target="cpu_amx", before=("cpu_zentorch", "cpu_grouped"), when=HAS_AMX_KERNEL,
            reason="AMX tiles multiply bf16 several times faster than AVX-512, and fused_experts_cpu does "
                   "the sort, both GEMMs, silu and the top-k sum in one C++ call"),
        PriorityHint(
            target="cpu_zentorch", before=("cpu_grouped",),
            reason="MEASURED_REASON"),
    ]

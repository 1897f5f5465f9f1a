"""The CPU backends' order, as hints with reasons (shown by ``moe-oracle explain``).

Base ranks: ``cpu_amx`` 10, ``cpu_zentorch`` 20, ``cpu_grouped`` 30; core's reference is last and
the Triton interpreter just before it. The hints below restate the order as rules, each with the
measurement or fact behind it, so ``explain`` shows why one CPU backend precedes another.

Selection happens per config, not per token count, so a backend that won only some token counts
would need its experts to dispatch by T inside. The benchmark found no crossover between
``cpu_zentorch`` and ``cpu_grouped`` (zentorch won every cell), so the order is global.
"""

from __future__ import annotations

from moe_oracle.spec import PriorityHint
from moe_oracle_cpu.amx.spec import HAS_AMX_KERNEL


def cpu_hints() -> list[PriorityHint]:
    return [
        PriorityHint(
            target="cpu_amx", before=("cpu_zentorch", "cpu_grouped"), when=HAS_AMX_KERNEL,
            reason="fused_experts_cpu runs its bf16 GEMMs on AMX tiles and does the sort, both GEMMs, silu and "
                   "the top-k sum in one C++ call; not measured on AMX, which this project's machine lacks"),
        PriorityHint(
            target="cpu_zentorch", before=("cpu_grouped",),
            reason="measured by bench/cpu_moe.py on an AMD EPYC Zen 4 (2 threads; bench/results/cpu_moe_*.json): "
                   "zentorch_fused_moe was 1.3-2.4x faster than cpu_grouped on Qwen3-30B-A3B (bf16 and fp32) "
                   "and 1.04-1.7x on Mixtral-8x7B (bf16) at every token count from 1 to 1024"),
    ]

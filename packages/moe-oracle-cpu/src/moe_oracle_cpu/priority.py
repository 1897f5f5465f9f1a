"""The CPU backends' order, as hints with reasons (shown by ``moe-oracle explain``).

Base ranks: ``cpu_amx`` 10, ``cpu_zentorch`` 20, ``cpu_grouped`` 30; core's reference is last and
the Triton interpreter just before it. The hints below restate the order as rules, each with the
measurement or fact behind it, so ``explain`` shows why one CPU backend precedes another.

Selection happens per config, not per token count, so a backend that won only some token counts
would need its experts to dispatch by T inside. The benchmark found no crossover between
``cpu_zentorch`` and ``cpu_grouped`` (zentorch won or tied every cell), so the order is global.
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
            reason="measured by bench/cpu_moe.py on an AMD EPYC Zen 4 (2 threads, bf16): zentorch_fused_moe "
                   "was 1.6-2.1x faster than cpu_grouped on Qwen3-30B-A3B at 1-256 tokens and 1.3x on "
                   "Mixtral-8x7B at 1-16, and tied on Mixtral at 256-1024; it never lost, so it comes first "
                   "at every token count"),
    ]

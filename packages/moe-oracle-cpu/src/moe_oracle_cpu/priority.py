"""The CPU backends' order, as hints with reasons (shown by ``moe-oracle explain``).

Base ranks: ``cpu_amx`` 10, ``cpu_zentorch`` 20, ``cpu_grouped`` 30; core's reference is last and
the Triton interpreter just before it. The hints below restate the order as rules, each with the
measurement or fact behind it, so ``explain`` shows why one CPU backend precedes another.

Selection happens per config, not per token count, so a backend that won only some token counts
would need its experts to dispatch by T inside. ``cpu_grouped`` on its native AVX-512 kernels and
``cpu_zentorch`` do not cross over by token count (``cpu_grouped`` won or tied every cell), so the
order between them depends only on whether those kernels run the config.
"""

from __future__ import annotations

from moe_oracle.spec import PriorityHint
from moe_oracle_cpu.amx.spec import HAS_AMX_KERNEL
from moe_oracle_cpu.grouped.spec import NATIVE_KERNELS


def cpu_hints() -> list[PriorityHint]:
    return [
        PriorityHint(
            target="cpu_amx", before=("cpu_zentorch", "cpu_grouped"), when=HAS_AMX_KERNEL,
            reason="fused_experts_cpu runs its bf16 GEMMs on AMX tiles and does the sort, both GEMMs, silu and "
                   "the top-k sum in one C++ call; not measured on AMX, which this project's machine lacks"),
        PriorityHint(
            target="cpu_grouped", before=("cpu_zentorch",), when=NATIVE_KERNELS,
            reason="measured by bench/cpu_moe.py on an AMD EPYC Zen 4 (2 threads; bench/results/cpu_moe_bf16.json): "
                   "on its native kernels cpu_grouped was 3-18% faster than zentorch_fused_moe on Qwen3-30B-A3B at "
                   "every token count from 1 to 1024 and within 4% of it or faster on Mixtral-8x7B"),
        PriorityHint(
            target="cpu_zentorch", before=("cpu_grouped",), when=~NATIVE_KERNELS,
            reason="measured by bench/cpu_moe.py on an AMD EPYC Zen 4 (2 threads), cpu_grouped on oneDNN "
                   "(MOE_ORACLE_CPU_NATIVE=0): zentorch_fused_moe was 1.3-2.4x faster on Qwen3-30B-A3B (bf16 "
                   "and fp32) and 1.04-1.7x on Mixtral-8x7B (bf16) at every token count from 1 to 1024"),
    ]

"""The CPU backends' order, as hints with reasons (shown by ``moe-oracle explain``).

Base ranks: ``cpu_amx`` 10, ``cpu_zentorch`` 20, ``cpu_grouped`` 30; core's reference is last and
the Triton interpreter just before it. The hints below restate the order as rules, each with the
measurement or fact behind it, so ``explain`` shows why one CPU backend precedes another.

Selection happens per config, not per token count, so a backend that won only some token counts
would need its experts to dispatch by T inside. ``cpu_grouped`` on its native AVX-512 kernels and
``cpu_zentorch`` do not cross over by token count in a way one order could serve better:
``cpu_grouped`` won 21 of 24 cells (bf16 and fp32, 1-1024 tokens) and was within 0.4-2% of zentorch
in two more; the one clear loss (Mixtral bf16 at 256 tokens, 445 against 405 ms in 3 rounds) was
408 ms for cpu_grouped when re-measured alone (zentorch was 405-455 ms across runs). So the order
between them depends only on whether the native kernels run the config.
"""

from __future__ import annotations

from moe_oracle.plugin import PriorityHint
from moe_oracle_cpu.cpu_amx.spec import HAS_AMX_KERNEL
from moe_oracle_cpu.cpu_grouped.spec import AVX512_KERNELS


def priority_hints() -> list[PriorityHint]:
    return [
        PriorityHint(
            target="cpu_amx", before=("cpu_zentorch", "cpu_grouped"), when=HAS_AMX_KERNEL,
            reason="fused_experts_cpu runs its bf16 GEMMs on AMX tiles and does the sort, both GEMMs, silu and "
                   "the top-k sum in one C++ call; not measured on AMX, which this project's machine lacks"),
        PriorityHint(
            target="cpu_grouped", before=("cpu_zentorch",), when=AVX512_KERNELS,
            reason="measured by bench/cpu_moe.py on an AMD EPYC Zen 4 (2 threads; bench/results/cpu_moe_*.json): "
                   "on its native kernels cpu_grouped was 3-62% faster than zentorch_fused_moe on Qwen3-30B-A3B "
                   "(bf16 and fp32, 1 to 1024 tokens), 0-20% faster on Mixtral-8x7B up to 64 tokens and "
                   "within 2% beyond except one 3-round cell (bf16, 256 tokens: 9% slower)"),
        PriorityHint(
            target="cpu_zentorch", before=("cpu_grouped",), when=~AVX512_KERNELS,
            reason="measured by bench/cpu_moe.py on an AMD EPYC Zen 4 (2 threads; cpu_grouped_onednn in "
                   "bench/results/cpu_moe_*.json): against cpu_grouped on oneDNN, zentorch_fused_moe was 1.3-2.7x "
                   "faster on Qwen3-30B-A3B and 1.0-1.8x on Mixtral-8x7B (bf16 and fp32, 1 to 1024 tokens)"),
    ]

"""CUDA priority rules: what the field knows about which kernel wins on which NVIDIA GPU.

Every rule is a ``PriorityHint`` with its reason and source (vLLM 0.33's oracles and the issues
behind them); ``explain`` prints each one next to the backend it moved. Base ranks: flashinfer_trtllm
10, flashinfer_cutlass 20, then core's triton 50 and batched_triton 60 (and reference last).
Without a rule the order is therefore: TRTLLM, CUTLASS, Triton, batched Triton; which of them
can serve a config is left to their support checks (e.g. TRTLLM only on capability 10.x, the
batched activation format only on batched_triton).
"""

from __future__ import annotations

from moe_oracle.plugin import PriorityHint, activation_in, dp_size_above, on_vendor
from moe_oracle_cuda.checks import EXPERT_PARALLEL, FP8_BLOCK, GPT_OSS, HOPPER, MXFP4_FAMILY, UNQUANTIZED_SCHEME

TRITONS = ("triton", "batched_triton")
CUDA = on_vendor("cuda")

CUDA_RULES: tuple[PriorityHint, ...] = (
    # Unquantized --------------------------------------------------------------------------------
    *(PriorityHint(
        target=name, after=TRITONS, when=UNQUANTIZED_SCHEME & HOPPER,
        reason="bf16 FlashInfer is slower than Triton on Hopper (vLLM moved it behind Triton on SM90; "
               "vllm#44220: 57.8k vs 55.7k tok/s)")
      for name in ("flashinfer_trtllm", "flashinfer_cutlass")),
    PriorityHint(
        target="flashinfer_cutlass", after=("flashinfer_trtllm", *TRITONS),
        when=UNQUANTIZED_SCHEME & dp_size_above(1),
        reason="bf16 FlashInfer CUTLASS crashed under data + expert parallelism (vLLM moves it last when dp_size > 1)"),
    *(PriorityHint(
        target=name, after=TRITONS, when=UNQUANTIZED_SCHEME & activation_in("swigluoai"),
        reason="FlashInfer runs swigluoai as generic SwiGLU-with-bias in bf16; vLLM prefers Triton for it")
      for name in ("flashinfer_trtllm", "flashinfer_cutlass")),
    # fp8 128x128 blocks on Hopper ------------------------------------------------------------------
    PriorityHint(
        target="triton", before=("flashinfer_*",), when=CUDA & FP8_BLOCK & HOPPER & ~EXPERT_PARALLEL,
        reason="Hopper fp8 block without expert parallelism: Triton beats FlashInfer CUTLASS "
               "(vllm#33490: CUTLASS ~30% slower)"),
    PriorityHint(
        target="flashinfer_cutlass", before=("flashinfer_trtllm", *TRITONS), when=FP8_BLOCK & HOPPER & EXPERT_PARALLEL,
        reason="Hopper fp8 block with expert parallelism: FlashInfer CUTLASS first (vLLM's SM90 rule)"),
    # mxfp4: gpt-oss's own order ---------------------------------------------------------------------
    PriorityHint(
        target="triton", before=("flashinfer_cutlass",), when=CUDA & MXFP4_FAMILY & GPT_OSS,
        reason="gpt-oss mxfp4: TRTLLM first, then a Triton mxfp4 kernel, then CUTLASS (vLLM's gpt-oss order)"),
)


def priority_hints() -> list[PriorityHint]:
    """This package's hints, for its ``moe_oracle.backends`` entry point."""
    return list(CUDA_RULES)

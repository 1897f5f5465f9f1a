"""moe-oracle-cuda: NVIDIA: FlashInfer CUTLASS/TRTLLM experts, CUDA priority rules, tuned Triton configs.

The entry point ``backends`` returns the two FlashInfer backend specs and the CUDA priority
rules (``moe_oracle_cuda.priority``), some of which order core's Triton backends. Nothing here
imports flashinfer: its absence is a support reason ("flashinfer not installed"), not an error.
"""

from __future__ import annotations

from moe_oracle.plugin import BackendSpec, PriorityHint
from moe_oracle_cuda.version import __version__


def backends() -> list[BackendSpec | PriorityHint]:
    """Entry point of the ``moe_oracle.backends`` group: this package's specs and hints."""
    from moe_oracle_cuda.flashinfer_cutlass.spec import FLASHINFER_CUTLASS_SPEC
    from moe_oracle_cuda.flashinfer_trtllm.spec import FLASHINFER_TRTLLM_SPEC
    from moe_oracle_cuda.priority import priority_hints

    return [FLASHINFER_TRTLLM_SPEC, FLASHINFER_CUTLASS_SPEC, *priority_hints()]


__all__ = ["__version__", "backends"]

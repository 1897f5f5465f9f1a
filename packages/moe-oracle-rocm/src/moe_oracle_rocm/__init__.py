"""moe-oracle-rocm: AMD: AITER experts, AITER weight shuffles, ROCm priority rules, tuned Triton configs.

The ``aiter`` backend (rank 10) goes before core's ``triton`` (50), ``batched_triton`` (60) and
``reference`` (last) by rank alone, which is the order on ROCm. AITER is imported only when a
kernel runs, so this package imports on any machine.
"""

from __future__ import annotations

from moe_oracle.plugin import BackendSpec, PriorityHint
from moe_oracle_rocm.version import __version__


def backends() -> list[BackendSpec | PriorityHint]:
    """Entry point of the ``moe_oracle.backends`` group: this package's specs and hints."""
    from moe_oracle_rocm.aiter.spec import AITER_SPEC
    from moe_oracle_rocm.priority import priority_hints

    return [AITER_SPEC, *priority_hints()]


__all__ = ["__version__", "backends"]

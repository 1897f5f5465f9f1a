"""moe-oracle-xpu: Intel GPU: vllm-xpu-kernels and IPEX experts, XPU layouts and priority rules.

``xpu`` (rank 10, vllm-xpu-kernels) goes before ``xpu_ipex`` (20, IPEX 2.8 with torch 2.8), then
core's ``triton`` (50) and ``reference`` (last): the order on XPU follows from the ranks. Vendor
libraries are imported only when a kernel is built, so this package imports on any machine.
"""

from __future__ import annotations

from moe_oracle.plugin import BackendSpec, PriorityHint
from moe_oracle_xpu.version import __version__


def backends() -> list[BackendSpec | PriorityHint]:
    """Entry point of the ``moe_oracle.backends`` group: this package's specs and hints."""
    from moe_oracle_xpu.priority import priority_hints
    from moe_oracle_xpu.xpu.spec import XPU_SPEC
    from moe_oracle_xpu.xpu_ipex.spec import XPU_IPEX_SPEC

    return [XPU_SPEC, XPU_IPEX_SPEC, *priority_hints()]


__all__ = ["__version__", "backends"]

"""moe-oracle-xpu: Intel GPU: vllm-xpu-kernels and IPEX experts, XPU layouts and priority rules."""

from __future__ import annotations

from moe_oracle import BackendSpec, PriorityHint

from moe_oracle_xpu.version import __version__


def backends() -> list[BackendSpec | PriorityHint]:
    """Entry point of the ``moe_oracle.backends`` group: this package's specs and hints."""
    return []


__all__ = ["__version__", "backends"]

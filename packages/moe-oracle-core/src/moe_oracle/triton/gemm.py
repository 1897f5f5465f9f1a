"""The grouped expert GEMM of the Triton backends, one kernel for both GEMMs and every scheme.

Shape letters: T tokens, K top-k, P = T*K (token, expert) pairs, E experts (local), N output
columns, Kd the reduction dimension (H for the first GEMM, I for the second).

Rows of A are gathered through ``sorted_ids`` (pair ids grouped by expert, each ``BLOCK_M`` block
one expert; see ``align.py``); row ``p`` of A is ``p // a_row_div`` (tokens for the first GEMM,
pairs for the second). In the batched format rows are ``e * max_tokens + j`` instead and no
alignment exists. Output rows are pair ids (batched: the same rows as A).

The first GEMM is gated-fused: one program computes the gate tile (w13 rows ``n``) and the up
tile (rows ``n + N``) of the same columns and writes ``act(gate) * up``, so the ``[P, 2*I]``
intermediate never reaches memory; with fp8 128x128-block weights it also quantizes its output
per 128 columns for the second GEMM (``OUT_QUANT``). The second GEMM may split its reduction
(``SPLIT_K``): partial sums go to ``[S, P, H]`` float32 and the top-k sum adds them up.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moe_oracle.triton.align import AlignedRouting, DirectRouting
from moe_oracle.triton.configs import TritonConfig
from moe_oracle.triton.dequant import PACKED_FORMATS, S_NONE, W_STORED, load_weight_tile

# Activation codes (constexpr).
ACT_NONE, ACT_SILU, ACT_GELU, ACT_SWIGLUOAI, ACT_RELU2 = 0, 1, 2, 3, 4
ACTIVATION_CODES = {"silu": ACT_SILU, "gelu": ACT_GELU, "swigluoai": ACT_SWIGLUOAI, "relu2": ACT_RELU2}
# Operand quantization codes (constexpr). A: activations; B: weights.
A_NONE, A_TENSOR, A_TOKEN, A_GROUP = 0, 1, 2, 3
B_NONE, B_TENSOR, B_CHANNEL, B_BLOCK = 0, 1, 2, 3
# Output quantization codes (constexpr): none, fp8 per token group (dynamic), fp8 static per tensor.
OUT_NONE, OUT_FP8_GROUP, OUT_FP8_STATIC = 0, 1, 2
FP8_MAX = tl.constexpr(448.0)


@triton.jit
def _round_half_even(x):
    r = tl.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)


@triton.jit
def _round_to_e4m3_grid(x):
    """Round fp32 ``x`` (already clamped to +-448) to the nearest e4m3 value, ties to even, in fp32.

    Only the interpreter needs it: its fp32 -> fp8 cast mis-rounds values that carry into the next
    binade (124.4 becomes 64, not 128); after this the cast is exact. Compiled code casts in
    hardware (round to nearest even, saturating).
    """
    bits = x.to(tl.int32, bitcast=True)
    exponent = tl.maximum(((bits >> 23) & 0xFF) - 127, -6)  # e4m3 subnormals share 2^-6's step
    step = ((exponent - 3 + 127) << 23).to(tl.float32, bitcast=True)
    return _round_half_even(x / step) * step


@triton.jit
def _activate(g, u, GATED: tl.constexpr, ACTIVATION: tl.constexpr, SWIGLU_ALPHA: tl.constexpr,
              SWIGLU_LIMIT: tl.constexpr):
    """fp32 activation of the gate tile ``g``, times the up tile ``u`` when ``GATED``.

    A positive ``SWIGLU_LIMIT`` clamps first (gate at most the limit, up within +-limit), as gpt-oss
    does and as vLLM's clamped SwiGLU does for silu/gelu.
    """
    if GATED and SWIGLU_LIMIT > 0:
        g = tl.minimum(g, SWIGLU_LIMIT)
        u = tl.minimum(tl.maximum(u, -SWIGLU_LIMIT), SWIGLU_LIMIT)
    if ACTIVATION == 1:  # silu
        y = g / (1.0 + tl.exp(-g))
    elif ACTIVATION == 2:  # exact (erf) gelu
        y = 0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476))
    elif ACTIVATION == 3:  # gpt-oss: (up + 1) * gate * sigmoid(alpha * gate)
        y = g / (1.0 + tl.exp(-SWIGLU_ALPHA * g))
        u = u + 1.0
    else:  # relu(g)^2, not gated
        r = tl.maximum(g, 0.0)
        y = r * r
    if GATED:
        y = y * u
    return y


# Token counts vary per call: not specializing on them lets one compiled kernel serve every T.
@triton.jit(do_not_specialize=["num_pairs", "max_tokens"])
def _moe_gemm_kernel(
    # Pointers to matrices and their side tensors
    a_ptr, b_ptr, c_ptr,
    a_scale_ptr, b_scale_ptr, b_zp_ptr, b_gscale_ptr, bias_ptr, topk_weights_ptr, c_scale_ptr,
    # Routing: aligned pair ids, expert of each block, padded length; batched: tokens per expert
    sorted_ids_ptr, block_expert_ptr, num_padded_ptr, expert_num_tokens_ptr, expert_map_ptr,
    # Matrix dimensions
    N, K, num_pairs, max_tokens, k_per_split,
    # The stride variables
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_cs, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, stride_bze, stride_bzn, stride_bzk,
    stride_biase, stride_biasn, stride_csm, stride_csk,
    # Meta-parameters
    A_ROW_DIV: tl.constexpr, BATCHED: tl.constexpr, DIRECT: tl.constexpr, HAS_MAP: tl.constexpr,
    GATED: tl.constexpr, ACTIVATION: tl.constexpr,
    SWIGLU_ALPHA: tl.constexpr, SWIGLU_LIMIT: tl.constexpr,
    MUL_ROUTED_WEIGHT: tl.constexpr, WEIGHT_BEFORE_BIAS: tl.constexpr, HAS_BIAS: tl.constexpr,
    A_QUANT: tl.constexpr, B_QUANT: tl.constexpr, HAS_ZP: tl.constexpr,
    W_FORMAT: tl.constexpr, W_SCALE: tl.constexpr, W_SCALE_N_DIV: tl.constexpr, W_GT: tl.constexpr, PACK: tl.constexpr,
    HAS_GSCALE: tl.constexpr,
    B_OFFSET: tl.constexpr, INT_ACC: tl.constexpr, GROUP_K: tl.constexpr, GROUP_N: tl.constexpr,
    OUT_QUANT: tl.constexpr, OUT_GROUP: tl.constexpr, SPLIT_K: tl.constexpr, UPCAST: tl.constexpr,
    ROUND_FP8: tl.constexpr,
    DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_m = tl.num_programs(0) // num_pid_n
    # Grouped ordering: GROUP_M row blocks share their weight tiles in L2.
    width = GROUP_M * num_pid_n
    first_m = (pid // width) * GROUP_M
    group_rows = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % width) % group_rows)
    pid_n = (pid % width) // group_rows

    offs_j = tl.arange(0, BLOCK_M)
    if BATCHED:
        blocks_per_expert = tl.cdiv(max_tokens, BLOCK_M)
        expert = pid_m // blocks_per_expert
        first = (pid_m % blocks_per_expert) * BLOCK_M
        ntok = tl.load(expert_num_tokens_ptr + expert)
        if first >= ntok:
            return
        rows = expert.to(tl.int64) * max_tokens + first + offs_j
        row_mask = (first + offs_j) < ntok
        a_rows = rows
    elif DIRECT:  # one pair per block (block_expert_ptr holds topk_ids): only row 0 is real
        rows = (pid_m + offs_j * 0).to(tl.int64)
        row_mask = offs_j == 0
        expert = tl.load(block_expert_ptr + pid_m)
        if HAS_MAP:
            expert = tl.load(expert_map_ptr + expert)
            if expert < 0:
                return
        a_rows = rows // A_ROW_DIV
    else:
        if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
            return
        rows = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + offs_j).to(tl.int64)
        row_mask = rows < num_pairs
        expert = tl.load(block_expert_ptr + pid_m)
        a_rows = rows // A_ROW_DIV
    expert = expert.to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_bn = offs_n % N  # columns past N repeat real ones: loads need no mask, stores do
    offs_k = tl.arange(0, BLOCK_K)
    k_start = split * k_per_split
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + (k_start + offs_k)[None, :] * stride_ak
    if W_FORMAT != 0:
        # Mixed input: [BLOCK_N, BLOCK_K / PACK] stored bytes (K contiguous), dequantized in registers.
        offs_kb = tl.arange(0, BLOCK_K // PACK)
        w_base = b_ptr + expert * stride_be + (k_start // PACK + offs_kb)[None, :] * stride_bk
        w_ptrs = w_base + offs_bn[:, None] * stride_bn
        offs_g = tl.arange(0, W_GT)
        s_base = b_scale_ptr + expert * stride_bse + (offs_bn // W_SCALE_N_DIV)[:, None] * stride_bsn
        z_base = b_zp_ptr + expert * stride_bze + offs_bn[:, None] * stride_bzn
        if GATED:
            wu_ptrs = w_base + (offs_bn + N)[:, None] * stride_bn
            su_base = b_scale_ptr + expert * stride_bse + ((offs_bn + N) // W_SCALE_N_DIV)[:, None] * stride_bsn
            zu_base = b_zp_ptr + expert * stride_bze + (offs_bn + N)[:, None] * stride_bzn
    else:
        b_base = b_ptr + expert * stride_be + (k_start + offs_k)[:, None] * stride_bk
        b_ptrs = b_base + offs_bn[None, :] * stride_bn
        if GATED:
            bu_ptrs = b_base + (offs_bn + N)[None, :] * stride_bn
    if B_QUANT == 3:
        bs_ptrs = b_scale_ptr + expert * stride_bse + (offs_bn // GROUP_N) * stride_bsn
        if GATED:
            bsu_ptrs = b_scale_ptr + expert * stride_bse + ((offs_bn + N) // GROUP_N) * stride_bsn
    if A_QUANT == 3:
        as_ptrs = a_scale_ptr + a_rows * stride_asm

    if INT_ACC:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_end = tl.minimum(K, k_start + k_per_split)
    for k0 in range(k_start, k_end, BLOCK_K):
        k_mask = offs_k < k_end - k0
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_mask[:, None], other=0.0)
        else:
            a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        if W_FORMAT != 0:
            kb_mask = offs_kb < (k_end - k0) // PACK
            g_idx = k0 // GROUP_K + offs_g
            g_mask = g_idx * GROUP_K < k_end
            b = load_weight_tile(w_ptrs, s_base + g_idx[None, :] * stride_bsk, z_base + g_idx[None, :] * stride_bzk,
                                 kb_mask, g_mask, W_FORMAT, W_SCALE, HAS_ZP, B_OFFSET, EVEN_K, BLOCK_N, BLOCK_K,
                                 W_GT, a.dtype)
        elif EVEN_K:
            b = tl.load(b_ptrs)
        else:
            b = tl.load(b_ptrs, mask=k_mask[:, None], other=0.0)
        if B_QUANT == 2 and A_QUANT == 0 and W_FORMAT == 0:  # int8 weights, unquantized activations
            b = b.to(a.dtype)
        if UPCAST:  # the interpreter multiplies bf16 bit patterns: compute in fp32 there
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if B_QUANT == 3:
            a_s = tl.load(as_ptrs + (k0 // GROUP_K) * stride_ask, mask=row_mask, other=0.0)
            b_s = tl.load(bs_ptrs + (k0 // GROUP_K) * stride_bsk)
            acc += tl.dot(a, b, input_precision=DOT_PRECISION) * a_s[:, None] * b_s[None, :]
        else:
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)
        if GATED:
            if W_FORMAT != 0:
                bu = load_weight_tile(wu_ptrs, su_base + g_idx[None, :] * stride_bsk,
                                      zu_base + g_idx[None, :] * stride_bzk, kb_mask, g_mask, W_FORMAT, W_SCALE,
                                      HAS_ZP, B_OFFSET, EVEN_K, BLOCK_N, BLOCK_K, W_GT, a.dtype)
                wu_ptrs += (BLOCK_K // PACK) * stride_bk
            else:
                if EVEN_K:  # noqa: SIM108  (constexpr branch)
                    bu = tl.load(bu_ptrs)
                else:
                    bu = tl.load(bu_ptrs, mask=k_mask[:, None], other=0.0)
                bu_ptrs += BLOCK_K * stride_bk
            if B_QUANT == 2 and A_QUANT == 0 and W_FORMAT == 0:
                bu = bu.to(a.dtype)
            if UPCAST:
                bu = bu.to(tl.float32)
            if B_QUANT == 3:
                bu_s = tl.load(bsu_ptrs + (k0 // GROUP_K) * stride_bsk)
                acc_u += tl.dot(a, bu, input_precision=DOT_PRECISION) * a_s[:, None] * bu_s[None, :]
            else:
                acc_u = tl.dot(a, bu, acc_u, input_precision=DOT_PRECISION, out_dtype=acc_u.dtype)
        a_ptrs += BLOCK_K * stride_ak
        if W_FORMAT != 0:
            w_ptrs += (BLOCK_K // PACK) * stride_bk
        else:
            b_ptrs += BLOCK_K * stride_bk

    # Epilogue: dequantization scales, router weight, bias, activation, output quantization.
    acc = acc.to(tl.float32)
    acc_u = acc_u.to(tl.float32)
    if A_QUANT == 1:
        a_s = tl.load(a_scale_ptr)
        acc = acc * a_s
        acc_u = acc_u * a_s
    elif A_QUANT == 2:
        a_s = tl.load(a_scale_ptr + a_rows * stride_asm, mask=row_mask, other=0.0)
        acc = acc * a_s[:, None]
        acc_u = acc_u * a_s[:, None]
    if B_QUANT == 1:
        b_s = tl.load(b_scale_ptr + expert * stride_bse)
        acc = acc * b_s
        acc_u = acc_u * b_s
    elif B_QUANT == 2:
        b_s = tl.load(b_scale_ptr + expert * stride_bse + offs_bn * stride_bsn)
        acc = acc * b_s[None, :]
        if GATED:
            bu_s = tl.load(b_scale_ptr + expert * stride_bse + (offs_bn + N) * stride_bsn)
            acc_u = acc_u * bu_s[None, :]
    if HAS_GSCALE:  # nvfp4: the per-expert global scale of the weights
        g_s = tl.load(b_gscale_ptr + expert)
        acc = acc * g_s
        acc_u = acc_u * g_s
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + rows, mask=row_mask, other=0.0)
    if MUL_ROUTED_WEIGHT and WEIGHT_BEFORE_BIAS:
        acc = acc * w[:, None]
        acc_u = acc_u * w[:, None]
    if HAS_BIAS:  # noqa: SIM102  (constexpr test outside, runtime test inside)
        if split == 0:
            acc += tl.load(bias_ptr + expert * stride_biase + offs_bn * stride_biasn).to(tl.float32)[None, :]
            if GATED:
                acc_u += tl.load(bias_ptr + expert * stride_biase + (offs_bn + N) * stride_biasn).to(tl.float32)[None, :]
    if MUL_ROUTED_WEIGHT and not WEIGHT_BEFORE_BIAS:
        acc = acc * w[:, None]
    if ACTIVATION != 0:
        acc = _activate(acc, acc_u, GATED, ACTIVATION, SWIGLU_ALPHA, SWIGLU_LIMIT)

    n_mask = offs_n < N
    c_ptrs = c_ptr + split * stride_cs + rows[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = row_mask[:, None] & n_mask[None, :]
    if OUT_QUANT == 1:
        # Per token and OUT_GROUP columns; columns past N count as zeros (a partial group is
        # quantized as if zero-padded).
        acc = tl.where(n_mask[None, :], acc, 0.0)
        grouped = tl.reshape(acc, (BLOCK_M, BLOCK_N // OUT_GROUP, OUT_GROUP))
        amax = tl.max(tl.abs(grouped), axis=2)
        scale = tl.where(amax > 0, amax / FP8_MAX, 1.0)
        q = grouped / scale[:, :, None]
        q = tl.minimum(tl.maximum(q, -FP8_MAX), FP8_MAX)
        if ROUND_FP8:
            q = _round_to_e4m3_grid(q)
        tl.store(c_ptrs, tl.reshape(q, (BLOCK_M, BLOCK_N)).to(c_ptr.dtype.element_ty), mask=c_mask)
        offs_g = pid_n * (BLOCK_N // OUT_GROUP) + tl.arange(0, BLOCK_N // OUT_GROUP)
        cs_ptrs = c_scale_ptr + rows[:, None] * stride_csm + offs_g[None, :] * stride_csk
        tl.store(cs_ptrs, scale, mask=row_mask[:, None] & (offs_g * OUT_GROUP < N)[None, :])
    elif OUT_QUANT == 2:
        q = acc / tl.load(c_scale_ptr)
        q = tl.minimum(tl.maximum(q, -FP8_MAX), FP8_MAX)
        if ROUND_FP8:
            q = _round_to_e4m3_grid(q)
        tl.store(c_ptrs, q.to(c_ptr.dtype.element_ty), mask=c_mask)
    else:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def _moe_sum_kernel(c_ptr, out_ptr, topk_ids_ptr, expert_map_ptr, H, stride_cs, stride_cm, stride_om,
                    TOP_K: tl.constexpr, SPLIT_K: tl.constexpr, HAS_MAP: tl.constexpr, BLOCK_H: tl.constexpr):
    """out[t] = sum over k and splits of c[s, t*K + k], skipping pairs of non-local experts."""
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = cols < H
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for k in tl.static_range(TOP_K):
        keep = True
        if HAS_MAP:
            keep = tl.load(expert_map_ptr + tl.load(topk_ids_ptr + t * TOP_K + k)) >= 0
        for s in tl.static_range(SPLIT_K):
            row = c_ptr + s * stride_cs + (t * TOP_K + k) * stride_cm
            acc += tl.load(row + cols, mask=mask & keep, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * stride_om + cols, acc.to(out_ptr.dtype.element_ty), mask=mask)


def moe_sum(c: torch.Tensor, out: torch.Tensor, topk_ids: torch.Tensor, expert_map: torch.Tensor | None) -> None:
    """Top-k (and split-K) reduction, written into ``out``.

    Parameters
    ----------
    c : [S, T*K, H] partial expert outputs, rows in pair order (``t * K + k``).
    out : [T, H], written in place.
    topk_ids : [T, K] global expert ids; with ``expert_map`` [E_global] (-1: not local) they
        select which rows hold results (rows of other ranks' experts were never written).
    """
    t, h = out.shape
    k = topk_ids.shape[1]
    if t == 0:
        return
    block_h = min(1024, triton.next_power_of_2(h))
    _moe_sum_kernel[(t, triton.cdiv(h, block_h))](
        c, out, topk_ids, expert_map if expert_map is not None else topk_ids, h,
        c.stride(0), c.stride(1), out.stride(0),
        TOP_K=k, SPLIT_K=c.shape[0], HAS_MAP=expert_map is not None, BLOCK_H=block_h, num_warps=4)


def moe_gemm(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *,
    config: TritonConfig,
    n: int,
    routing: AlignedRouting | DirectRouting | None = None,
    expert_num_tokens: torch.Tensor | None = None,
    a_row_div: int = 1,
    gated: bool = False,
    activation: int = ACT_NONE,
    swiglu_alpha: float = 1.0,
    swiglu_limit: float = 0.0,
    a_quant: int = A_NONE,
    a_scale: torch.Tensor | None = None,
    b_quant: int = B_NONE,
    b_scale: torch.Tensor | None = None,
    b_zero_point: torch.Tensor | None = None,
    w_format: int = W_STORED,
    w_scale: int = S_NONE,
    w_scale_n_div: int = 1,
    b_global_scale: torch.Tensor | None = None,
    b_offset: float = 0.0,
    group_n: int = 128,
    group_k: int = 128,
    bias: torch.Tensor | None = None,
    topk_weights: torch.Tensor | None = None,
    weight_before_bias: bool = False,
    out_quant: int = OUT_NONE,
    out_scale: torch.Tensor | None = None,
    out_group: int = 128,
) -> None:
    """One grouped expert GEMM, written into ``c``.

    Parameters
    ----------
    a : [rows, Kd] activations (compute dtype, fp8 or int8); row ``p // a_row_div`` feeds pair ``p``.
        Batched format: [E * max_tokens, Kd].
    b : [E, N_b, Kd] weights (Kd/2 uint8 for the packed 4-bit ``w_format``s); N_b = 2*n when ``gated``
        (gate rows first). With ``w_format`` (``dequant.py``) they are dequantized in registers: then
        ``b_scale`` is per ``group_k`` along Kd when ``w_scale`` is set ([E, N_b / w_scale_n_div, Kd / group_k]:
        group scales, or fp8 128x128 blocks with ``w_scale_n_div=128``), else per tensor / channel by
        ``b_quant``; ``b_global_scale`` [E] float32 multiplies the output (nvfp4).
    c : [S, P, n] output (S = ``config.split_k``; fp32 when S > 1), rows in pair order, written in
        place; batched: [1, E * max_tokens, n].
    routing : the alignment of the pairs, or direct pairs (standard format); or ``expert_num_tokens``
        [E] (batched).
    a_scale, b_scale, b_zero_point : per the quantization codes (see the module constants).
    bias : [E, N_b]. topk_weights : [P] float32, multiplied into the rows (before the bias when
        ``weight_before_bias``: the router weight applied on the input).
    out_scale : with ``OUT_FP8_GROUP`` the [P, ceil(n/out_group)] float32 scales written; with
        ``OUT_FP8_STATIC`` the one-element static scale read.
    """
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    kd = a.shape[1]
    direct = isinstance(routing, DirectRouting)
    expert_map = routing.expert_map if isinstance(routing, DirectRouting) else None
    if isinstance(routing, DirectRouting):
        num_m = routing.num_pairs
        max_tokens, num_pairs = 0, routing.num_pairs
    elif routing is not None:
        if routing.block_m != bm:
            raise ValueError(f"routing.block_m: expected {bm} (config.block_m), got {routing.block_m}")
        num_m = routing.max_blocks
        max_tokens, num_pairs = 0, routing.num_pairs
    else:
        if expert_num_tokens is None:
            raise ValueError("routing: give the aligned routing (standard format) or expert_num_tokens (batched)")
        e = b.shape[0]
        max_tokens, num_pairs = a.shape[0] // e, a.shape[0]
        num_m = e * triton.cdiv(max_tokens, bm)
    split = config.split_k
    k_per_split = triton.cdiv(triton.cdiv(kd, split), bk) * bk
    if out_quant == OUT_FP8_GROUP and bn % out_group:
        raise ValueError(f"config.block_n: the fused fp8 group quantization needs a multiple of {out_group}, got {bn}")
    if (b_quant == B_BLOCK or (w_scale != S_NONE and bk <= group_k)) and group_k % bk:
        raise ValueError(f"config.block_k: block- and group-scaled weights need a divisor of {group_k}, got {bk}")
    if w_format != W_STORED and bk > group_k and w_scale != S_NONE and bk % group_k:
        raise ValueError(f"config.block_k: a tile of several weight groups needs a multiple of {group_k}, got {bk}")
    pack = 2 if w_format in PACKED_FORMATS else 1
    if b.dtype == torch.float8_e4m3fn and w_format != W_STORED:  # decoded from its bits (no fp8 hardware needed)
        b = b.view(torch.uint8)
    if b_scale is not None and b_scale.dtype == torch.float8_e4m3fn:
        b_scale = b_scale.view(torch.uint8)
    dummy = c
    a_s = a_scale if a_scale is not None else dummy
    b_s = b_scale if b_scale is not None else dummy
    b_z = b_zero_point if b_zero_point is not None else dummy
    scale_code = b_quant if w_scale == S_NONE else B_BLOCK  # any code that indexes a 3-D scale
    interpreted = a.device.type == "cpu"
    grid = (num_m * triton.cdiv(n, bn), split)
    _moe_gemm_kernel[grid](
        a, b, c,
        a_s, b_s, b_z, b_global_scale if b_global_scale is not None else dummy, bias if bias is not None else dummy,
        topk_weights if topk_weights is not None else dummy,
        out_scale if out_scale is not None else dummy,
        routing.sorted_ids if isinstance(routing, AlignedRouting) else dummy,
        routing.topk_ids if isinstance(routing, DirectRouting) else routing.block_expert if routing is not None else dummy,
        routing.num_padded if isinstance(routing, AlignedRouting) else dummy,
        expert_num_tokens if expert_num_tokens is not None else dummy,
        expert_map if expert_map is not None else dummy,
        n, kd, num_pairs, max_tokens, k_per_split,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), b.stride(2), c.stride(0), c.stride(1), c.stride(2),
        *_strides2(a_s, a_quant in (A_TOKEN, A_GROUP)),
        *_strides3(b_s, scale_code), *_strides3(b_z, scale_code if b_zero_point is not None else B_NONE),
        *((bias.stride(0), bias.stride(1)) if bias is not None else (0, 0)),
        *_strides2(out_scale, out_quant == OUT_FP8_GROUP),
        A_ROW_DIV=a_row_div, BATCHED=routing is None, DIRECT=direct,
        HAS_MAP=expert_map is not None, GATED=gated, ACTIVATION=activation,
        SWIGLU_ALPHA=float(swiglu_alpha), SWIGLU_LIMIT=float(swiglu_limit),
        MUL_ROUTED_WEIGHT=topk_weights is not None, WEIGHT_BEFORE_BIAS=weight_before_bias,
        HAS_BIAS=bias is not None, A_QUANT=a_quant, B_QUANT=b_quant,
        W_FORMAT=w_format, W_SCALE=w_scale, W_SCALE_N_DIV=w_scale_n_div,
        W_GT=max(1, bk // group_k) if w_scale != S_NONE else 1, PACK=pack, HAS_GSCALE=b_global_scale is not None,
        HAS_ZP=b_zero_point is not None, B_OFFSET=float(b_offset),
        INT_ACC=a.dtype == torch.int8, GROUP_K=group_k, GROUP_N=group_n,
        OUT_QUANT=out_quant, OUT_GROUP=out_group, SPLIT_K=split,
        UPCAST=interpreted and a.dtype == torch.bfloat16, ROUND_FP8=interpreted,
        DOT_PRECISION="ieee" if a.dtype == torch.float32 else "tf32",
        EVEN_K=kd % bk == 0 and (split == 1 or k_per_split * split == kd),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=config.group_m,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )


def _strides2(t: torch.Tensor | None, used: bool) -> tuple[int, int]:
    """(row, column) strides of a 2-D side tensor, zeros when the kernel does not index it."""
    if t is None or not used:
        return 0, 0
    return t.stride(0), (t.stride(1) if t.dim() > 1 else 0)


def _strides3(t: torch.Tensor, b_quant: int) -> tuple[int, int, int]:
    """(expert, row, column) strides of a weight scale or zero point tensor."""
    if b_quant == B_NONE:
        return 0, 0, 0
    if t.dim() == 1:  # [E] per-tensor
        return t.stride(0), 0, 0
    if t.dim() == 2:  # [E, N] per-channel
        return t.stride(0), t.stride(1), 0
    return t.stride(0), t.stride(1), t.stride(2)

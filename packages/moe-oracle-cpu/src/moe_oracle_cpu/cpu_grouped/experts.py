"""``cpu_grouped`` experts: tokens sorted by expert once, then per-expert GEMMs on contiguous rows.

Shape letters: T tokens, H hidden size, K top-k, E_l local experts, I intermediate size per
partition, N rows of w13 (2*I gated, I otherwise), R routed (token, slot) pairs, M rows of one expert.

Every forward converts ``hidden`` ``[T, H]`` to the compute dtype (fp16 runs in fp32, and so does
bf16 on CPUs without oneDNN bf16 GEMMs, see ``_weights.compute_dtype``). Where the weights were packed
for a native build (``native.py``: AVX-512, AVX2 or portable C; bf16, fp32 and quantized weights), the
layer runs on the C kernels: one call for plain gated silu on unquantized activations, else a C sort, a
C GEMM1 into ``[R, N]``, the activation (and activation quantization) in torch, a C GEMM2 into the
output rows (on an AMX CPU, bf16 forwards with many rows per expert take the torch path below:
``AMX_TORCH_ROWS``). Otherwise it sorts the pairs by expert in torch and gathers ``xs`` ``[R, H]``, so
each expert's rows are one contiguous slice, then takes one of two paths:

- **packed** (unquantized bf16/fp32 with oneDNN): one pass over the experts. GEMM1 on oneDNN-packed
  weights with the activation as a post-op where oneDNN has it (``silu``/``gelu`` gated: ``swish(x Wg^T)``
  then ``mul`` fused into ``x Wu^T``), else the activation in place on the GEMM1 output; the router
  weight scales the ``[M, I]`` activation (or, with a w2 bias, the GEMM2 output, as the bias comes
  before weighting); GEMM2; ``index_add_`` into the token rows of the ``[T, H]`` output.
- **tiles** (everything else): two passes, because quantized activations are
  quantized over all R rows at once (as the reference does). Pass 1 dequantizes each expert's
  ``w13`` tile alone and writes GEMM1 (+ bias, by ``addmm``) into one ``[R, N]`` buffer; the
  activation runs in place on it and is quantized; pass 2 dequantizes each ``w2`` tile, multiplies
  and adds into the output rows. Never more than one expert's float weights exist at a time.

No path allocates an ``[R, H]`` buffer: the top-k reduction is GEMM2's native epilogue (into a
float32 ``[T, H]``) or the ``index_add_`` into the output, which accumulates in the compute dtype
(for fp16 that output is float32, cast at the end).

GEMM choice, measured on this project's 2-core AMD Zen 4 (Qwen3-30B-A3B expert shapes,
8 experts per call, 1-64 rows each): ``torch._grouped_mm`` on CPU runs ATen's loop of ``mm``
and was 2-12% slower than per-expert ``F.linear`` on the same slices, which oneDNN-packed
weights beat by 1.2-1.6x (bf16) and 2.2-2.8x (fp32); so: per-expert products on contiguous
slices, packed where the weights are plain floats.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from moe_oracle.plugin import ExpertsModular, KernelWeights, MoEConfig, QuantConfig, QuantDesc, WeightError
from moe_oracle_cpu._activation import activate_
from moe_oracle_cpu._inputs import check_inputs
from moe_oracle_cpu._routing import ExpertRows, sort_by_expert
from moe_oracle_cpu._weights import ExpertWeights, bias_in, compute_dtype
from moe_oracle_cpu.cpu_grouped import native
from moe_oracle_cpu.cpu_grouped.converter import PACKED_LAYOUT, POST_OPS, cpu_features, layout_build
from moe_oracle_cpu.cpu_grouped.spec import BACKEND

# On a CPU with AMX, bf16 layers with at least this many rows per expert (T * top_k / E_l) run torch.mm
# on the canonical weights, which oneDNN runs on AMX tiles, instead of the AVX-512 kernels. Measured on
# a Sapphire Rapids Xeon, 16 threads (bench/results/cpu_native_vs_onednn_amx_2026-11-25.log): torch was
# 1.9-3.7x faster from 16 rows on Mixtral-8x7B and 1.5x at 64 on Qwen3-30B-A3B; the native kernels were
# 1.5-2.9x faster below 16 (and on Qwen3 at 16: 40 against 59 ms, the one cell this rule gets wrong).
AMX_TORCH_ROWS = 16


class GroupedExperts(ExpertsModular):
    """Sorted-by-expert per-expert GEMMs in torch for every scheme; every op runs on torch's
    intra-op pool, so ``torch.get_num_threads()`` threads.

    Raises ``WeightError`` if ``weights`` were converted for another backend (or lack the packed
    experts this config needs).
    """

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        weights.require(BACKEND)
        features = cpu_features()
        self.dtype = compute_dtype(config, features)
        self.build = layout_build(weights)
        self.packed = weights.layout == PACKED_LAYOUT
        # The vector builds read fp32 activations (a bf16 layer's are converted once per forward).
        self.native_dtype = self.dtype if self.build == "avx512" else torch.float32
        if self.build:
            native.load(self.build)  # built by the converter already; raises NativeError if it vanished
        elif self.packed and "w2" not in weights.extras:
            raise WeightError("weights.extras", "oneDNN-packed experts (moe_oracle_cpu.cpu_grouped.converter.convert)",
                              f"layout {weights.layout!r} without them")
        amx = self.build == "avx512" and self.dtype == torch.bfloat16 and "amx_bf16" in features
        # Routed pairs from which a forward leaves the native kernels for torch (see AMX_TORCH_ROWS).
        self.torch_from_pairs = AMX_TORCH_ROWS * config.num_local_experts if amx else None
        self.w13 = ExpertWeights(config, weights.w13, quant_config.w13, self.dtype)
        self.w2 = ExpertWeights(config, weights.w2, quant_config.w2, self.dtype)
        self.b13 = bias_in(self.dtype, quant_config.w13.bias)                 # [E_l, N] or None
        self.b2 = bias_in(self.dtype, quant_config.w2.bias)                   # [E_l, H] or None

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``sum_k topk_weights[t, k] * expert_{topk_ids[t, k]}(hidden[t])``.

        Parameters
        ----------
        hidden : ``[T, H]`` in ``config.dtype``.
        topk_weights : ``[T, K]`` float32.
        topk_ids : ``[T, K]`` int32/int64 expert ids (global with ``expert_map``, else local).
        expert_map : ``[E]`` global -> local id, -1 for another rank's expert (contributes zero).
        expert_num_tokens : must be None (standard format).

        Returns
        -------
        ``[T, H]`` in ``hidden.dtype``, newly allocated.
        """
        config = self.config
        use_native = bool(self.build) and (self.torch_from_pairs is None or topk_ids.numel() < self.torch_from_pairs)
        # The native sort checks the ids as it reads them (and falls back to this check to name a bad one).
        check_inputs(config, hidden, topk_weights, topk_ids, expert_map, expert_num_tokens, check_values=not use_native)
        x = hidden.to(self.dtype)                                                # [T, H]
        if config.apply_router_weight_on_input:
            x = x * topk_weights.to(self.dtype)                                  # [T, H] * [T, 1]
        x = _quantized(config, self.quant_config.a13, x, self.dtype)             # [T, H]
        if use_native:
            native_out = self._apply_native(x.to(self.native_dtype).contiguous(), topk_weights, topk_ids, expert_map)
            if native_out is None:  # an id out of range: the full check names it
                check_inputs(config, hidden, topk_weights, topk_ids, expert_map, expert_num_tokens)
                raise AssertionError("the native sort refused ids that check_inputs accepts")
            return native_out.to(hidden.dtype)
        rows = sort_by_expert(topk_weights, topk_ids, num_local_experts=config.num_local_experts,
                              expert_map=expert_map)
        out = torch.zeros(hidden.shape[0], config.hidden_size, dtype=self.dtype)  # [T, H]
        if rows.spans:
            xs = x.index_select(0, rows.token)                                   # [R, H]
            weight = None if config.apply_router_weight_on_input else rows.weight.to(self.dtype)[:, None]  # [R, 1]
            (self._packed if self.packed else self._tiles)(xs, rows, weight, out)
        return out if out.dtype == hidden.dtype else out.to(hidden.dtype)

    def _apply_native(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                      expert_map: torch.Tensor | None) -> torch.Tensor | None:
        """The layer on the native kernels: one C call for plain gated silu, else sort, GEMMs and the
        activation between (``_native``). None if an id is out of range."""
        config, extras = self.config, self.weights.extras
        if "w13_gate_up_panels" in extras:
            return native.forward_silu(x, topk_weights, topk_ids, extras["w13_gate_up_panels"], extras["w2_panels"],
                                       num_local_experts=config.num_local_experts, expert_map=expert_map,
                                       weighted=not config.apply_router_weight_on_input)
        rows = native.sort_rows(topk_weights, topk_ids, num_local_experts=config.num_local_experts,
                                expert_map=expert_map, build=self.build)
        return None if rows is None else self._native(x, rows)

    def _native(self, x: torch.Tensor, rows: native.SortedRows) -> torch.Tensor:
        """Both projections as one C call each over every expert; returns the float32 ``[T, H]`` sum.
        GEMM1 reads the token rows of ``x`` ``[T, H]`` through ``rows.token`` and adds into a float32
        ``[R, N]`` buffer (seeded with ``b13``); the activation runs in place on that; GEMM2 scales each
        row by its router weight and adds it into its token's output row."""
        config = self.config
        extras = self.weights.extras
        out = torch.zeros(x.shape[0], config.hidden_size, dtype=torch.float32)  # [T, H]
        r = rows.token.shape[0]
        if not r:
            return out
        spans = rows.spans                                                       # [S, 3]
        h = (torch.zeros(r, config.w13_rows, dtype=torch.float32) if self.b13 is None
             else self.b13.float().index_select(0, _row_experts(spans)))         # [R, N]
        native.expert_gemm(x, extras["w13_panels"], spans, h, rows_in=rows.token)
        a = activate_(config, h)                                                 # [R, I] view of h
        a = _quantized(config, self.quant_config.a2, a, self.dtype).to(self.native_dtype)  # row stride N if fp32
        weight = None if config.apply_router_weight_on_input else rows.weight     # [R]
        native.expert_gemm(a, extras["w2_panels"], spans, out, rows_out=rows.token, scale=weight)
        if self.b2 is not None:
            # sum_k w[t, k] * b2[e_k] as a [T, E_l] x [E_l, H] product, not a [R, H] buffer.
            per_expert = torch.zeros(x.shape[0], self.b2.shape[0], dtype=torch.float32)
            per_expert.index_put_((rows.token, _row_experts(spans)), torch.ones(r) if weight is None else weight, accumulate=True)
            out.addmm_(per_expert, self.b2.float())
        return out

    def _packed(self, xs: torch.Tensor, rows: ExpertRows, weight: torch.Tensor | None, out: torch.Tensor) -> None:
        """One pass over the experts on oneDNN-packed weights; adds into ``out`` ``[T, H]``."""
        linear = torch.ops.mkldnn._linear_pointwise
        extras = self.weights.extras
        config = self.config
        b13, b2 = self.b13, self.b2
        i = config.intermediate_size_per_partition
        attr, algorithm = POST_OPS.get(config.activation, ("none", ""))
        for e, start, end in rows.spans:
            xe = xs[start:end]                                                   # [M, H]
            if "gate" in extras:
                gate = linear(xe, extras["gate"][e], None if b13 is None else b13[e, :i], attr, [], algorithm)
                a = linear.binary(xe, gate, extras["up"][e], None if b13 is None else b13[e, i:], "mul")  # [M, I]
            else:
                h = linear(xe, extras["w13"][e], None if b13 is None else b13[e], "none", [], "")  # [M, N]
                a = activate_(config, h)                                         # [M, I]
            if weight is not None and b2 is None:
                a = a.mul_(weight[start:end])
            y = linear(a, extras["w2"][e], None if b2 is None else b2[e], "none", [], "")  # [M, H]
            if weight is not None and b2 is not None:
                y.mul_(weight[start:end])
            out.index_add_(0, rows.token[start:end], y)

    def _tiles(self, xs: torch.Tensor, rows: ExpertRows, weight: torch.Tensor | None, out: torch.Tensor) -> None:
        """Two passes over per-expert float tiles (dequantized or upcast); adds into ``out`` ``[T, H]``."""
        config = self.config
        h = torch.empty(xs.shape[0], config.w13_rows, dtype=self.dtype)          # [R, N]
        for e, start, end in rows.spans:
            w = self.w13[e]                                                      # [N, H]
            if self.b13 is None:
                torch.mm(xs[start:end], w.t(), out=h[start:end])
            else:
                torch.addmm(self.b13[e], xs[start:end], w.t(), out=h[start:end])
        a = activate_(config, h)                                                 # [R, I] view of h
        a = _quantized(config, self.quant_config.a2, a, self.dtype)
        if weight is not None and self.b2 is None:
            a = a.mul_(weight)                                                   # before GEMM2: it is linear
        for e, start, end in rows.spans:
            w = self.w2[e]                                                       # [H, I]
            if self.b2 is None:
                y = torch.mm(a[start:end], w.t())                                # [M, H]
            else:
                y = torch.addmm(self.b2[e], a[start:end], w.t())
                if weight is not None:
                    y.mul_(weight[start:end])
            out.index_add_(0, rows.token[start:end], y)


def _row_experts(spans: torch.Tensor) -> torch.Tensor:
    """``[R]`` local expert of each sorted row, from ``spans`` ``[S, 3]``."""
    return spans[:, 0].repeat_interleave(spans[:, 2] - spans[:, 1])


def _quantized(config: MoEConfig, desc: QuantDesc, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` ``[rows, cols]`` quantized and dequantized as the scheme quantizes this GEMM input
    (over exactly these rows, as the reference does), back in ``dtype``; ``x`` itself if unquantized."""
    if desc.key is None or x.numel() == 0:
        return x
    from moe_oracle.plugin import fake_quantize_activation

    return fake_quantize_activation(config.scheme, x, scale=desc.scale).to(dtype)

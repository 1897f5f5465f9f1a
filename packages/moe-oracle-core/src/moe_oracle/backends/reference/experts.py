"""The reference experts: float32, dequantized weights, written for clarity; the test oracle.

Shape letters: T tokens, H hidden size, K top-k, E experts (global), E_l local experts,
I intermediate size per partition, N rows of w13 (2*I gated: gate rows, then up rows; I otherwise),
R the (token, slot) pairs routed to an expert on this rank, M the rows of one expert.

One forward, top to bottom:

1. ``x = hidden`` in float32 ``[T, H]``; with ``apply_router_weight_on_input`` (top_k == 1 only)
   each row is multiplied by its router weight here and the output is not weighted later.
2. Activations are quantized where the scheme quantizes them, exactly once per GEMM input and over
   the whole tensor a kernel would quantize: ``x`` (all T rows) before GEMM1, and the activation
   output of every routed pair (all R rows at once) before GEMM2. Quantization is simulated
   (quantize, then dequantize to float32) by ``moe_oracle.quant.fake_quantize_activation``; static
   schemes use the QuantConfig's ``a13``/``a2`` scales. Per-token and per-group scales are the same
   whichever rows share a tensor; a per-tensor dynamic scale is the amax of exactly those rows.
3. ``expert_map`` (global -> local id, -1 = another rank) drops pairs whose expert is elsewhere:
   they contribute zero. Experts that receive no tokens are never touched.
4. GEMM1, activation: for each local expert that received tokens, its weights are dequantized on
   their own (never all experts at once), ``h = x @ w13[e]^T + w13_bias[e]`` ``[M, N]``, then
   the activation gives ``[M, I]``. On accelerators (no host synchronization, so a CUDA graph can
   hold the forward) every local expert runs over all T*K slots instead and keeps its own rows;
   the top-k sum is then a fixed-order sum over each token's K slots (``_apply_masked``).
5. GEMM2, weighting, top-k reduction: ``y = a @ w2[e]^T + w2_bias[e]`` ``[M, H]``, times the
   router weight (biases come before weighting), summed into the token's row of ``[T, H]``.
6. The float32 sum is cast to ``hidden.dtype``.

Activations (gated ones split ``h`` into ``gate, up = h[:, :I], h[:, I:]``):

- ``silu``: ``silu(gate) * up``; ``gelu``: ``gelu(gate) * up`` with the exact erf GELU
  (``0.5 * x * (1 + erf(x / sqrt(2)))``, not the tanh approximation). Non-gated: ``silu(h)``, ``gelu(h)``.
- ``swigluoai`` as gpt-oss: ``gate = min(gate, limit)``, ``up = clamp(up, -limit, limit)``,
  ``(up + 1) * gate * sigmoid(alpha * gate)``.
- ``relu2`` (non-gated): ``relu(h) ** 2``.
- A ``swiglu_limit`` on ``silu`` or ``gelu`` clamps the same way before the product, as vLLM's
  clamped SwiGLU does (gate at most ``limit``, up within ``[-limit, limit]``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from moe_oracle.config.moe import MoEConfig
from moe_oracle.errors import WeightError
from moe_oracle.kernel.canonical import expected_tensors, validate_canonical
from moe_oracle.kernel.inputs import check_routed_inputs
from moe_oracle.kernel.modular import ExpertsModular
from moe_oracle.kernel.quant_config import QuantConfig, QuantDesc
from moe_oracle.kernel.weights import CanonicalWeights, KernelWeights


class ReferenceExperts(ExpertsModular):
    """Pure-torch float32 experts on canonical weights; slow, simple, and the oracle of every test.

    Raises ``WeightError`` when a tensor the scheme needs is missing or mis-shaped
    (``MoEConfig`` already refuses ``apply_router_weight_on_input`` with top_k > 1).
    """

    activation_format: ClassVar[str] = "standard"
    _masked: ClassVar[bool] = False  # tests set it to run the accelerators' sync-free path on the CPU

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        if weights.layout != "canonical":
            raise WeightError("weights", "the canonical layout (the reference converts nothing)",
                              f"layout {weights.layout!r}")
        if quant_config.scheme != config.scheme:
            raise WeightError("quant_config.scheme", config.scheme.name, quant_config.scheme.name)
        validate_canonical(config, CanonicalWeights(**weights.tensors))
        _check_quant_config(config, quant_config)

    # The forward -------------------------------------------------------------------------------
    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``sum_k topk_weights[t, k] * expert_{topk_ids[t, k]}(hidden[t])`` as a new tensor.

        Parameters
        ----------
        hidden : torch.Tensor
            ``[T, H]`` in ``config.dtype``.
        topk_weights : torch.Tensor
            ``[T, K]`` float32.
        topk_ids : torch.Tensor
            ``[T, K]`` int32/int64 global expert ids in ``[0, E)`` (``[0, E_l)`` without ``expert_map``).
        expert_map : torch.Tensor, optional
            ``[E]`` int32/int64: global id -> local id in ``[0, E_l)``, or -1 for an expert on another
            rank (it contributes zero). ``None``: every expert is local.
        expert_num_tokens : None
            Only the batched format has it; the reference takes the standard format.

        Returns
        -------
        torch.Tensor
            ``[T, H]`` in ``hidden.dtype``, newly allocated.
        """
        check_routed_inputs(self.config, hidden, topk_weights, topk_ids, expert_map=expert_map,
                            expert_num_tokens=expert_num_tokens, who="the reference experts")
        config, qc = self.config, self.quant_config
        t, k = topk_ids.shape

        # 1. Input in float32; the router weight goes on the input only for top_k == 1.
        x = hidden.float()                                                        # [T, H]
        slot_weight = topk_weights.reshape(-1)                                    # [T*K]
        if config.apply_router_weight_on_input:
            x = x * topk_weights                                                  # [T, H] * [T, 1]
            slot_weight = torch.ones_like(slot_weight)

        # 2. GEMM1's input is quantized over all T rows, before dispatch.
        x = _fake_quantize(config, qc.a13, x)                                     # [T, H]

        # 3. The (token, slot) pairs whose expert lives here, as local expert ids.
        slot_expert = topk_ids.reshape(-1).long()                                 # [T*K] global
        if expert_map is not None:
            slot_expert = expert_map.long()[slot_expert]                          # [T*K] local, -1 elsewhere
        slot_token = torch.arange(t, device=hidden.device).repeat_interleave(k)   # [T*K]
        if hidden.device.type != "cpu" or self._masked:
            out = self._apply_masked(x, slot_expert, slot_token, slot_weight, k)  # [T, H] float32
            return out.to(hidden.dtype)
        here = slot_expert >= 0
        pair_expert, pair_token, pair_weight = slot_expert[here], slot_token[here], slot_weight[here]  # [R]
        experts_hit = pair_expert.unique().tolist()                               # sorted local ids

        # 4. GEMM1 (+ bias) and the activation, expert by expert, into one [R, I] buffer.
        i = config.intermediate_size_per_partition
        act = torch.empty(pair_token.numel(), i, dtype=torch.float32, device=hidden.device)  # [R, I]
        for e in experts_hit:
            rows = (pair_expert == e).nonzero().squeeze(1)                        # [M] into R
            h = x[pair_token[rows]] @ self._dequantized("w13", e).T               # [M, N]
            if qc.w13.bias is not None:
                h = h + qc.w13.bias[e].float()
            act[rows] = _activation(config, h)                                    # [M, I]

        # GEMM2's input is quantized over all R routed rows at once, as a kernel's intermediate is.
        act = _fake_quantize(config, qc.a2, act)                                  # [R, I]

        # 5. GEMM2 (+ bias), router weight, sum over the token's K slots.
        out = torch.zeros(t, config.hidden_size, dtype=torch.float32, device=hidden.device)  # [T, H]
        for e in experts_hit:
            rows = (pair_expert == e).nonzero().squeeze(1)                        # [M]
            y = act[rows] @ self._dequantized("w2", e).T                          # [M, H]
            if qc.w2.bias is not None:
                y = y + qc.w2.bias[e].float()
            out.index_add_(0, pair_token[rows], y * pair_weight[rows, None])

        # 6. Back to the caller's dtype.
        return out.to(hidden.dtype)                                               # [T, H]

    def _apply_masked(self, x: torch.Tensor, slot_expert: torch.Tensor, slot_token: torch.Tensor,
                      slot_weight: torch.Tensor, k: int) -> torch.Tensor:
        """Steps 4-5 without reading a value back to the host, for accelerators (a CUDA graph can hold
        it): every local expert runs over all T*K slots and keeps the rows routed to it (``where``, so
        rows of other experts, NaN or not, never mix in). Each slot's row is written once, and the K
        slots of a token are summed in a fixed order, so repeated runs agree bitwise."""
        config, qc = self.config, self.quant_config
        p = slot_expert.shape[0]
        xs = x[slot_token]                                                        # [P, H]
        act = torch.zeros(p, config.intermediate_size_per_partition, dtype=torch.float32, device=x.device)  # [P, I]
        for e in range(config.num_local_experts):
            h = xs @ self._dequantized("w13", e).T                                # [P, N]
            if qc.w13.bias is not None:
                h = h + qc.w13.bias[e].float()
            act = torch.where((slot_expert == e)[:, None], _activation(config, h), act)
        act = _fake_quantize(config, qc.a2, act)                                  # [P, I]; other ranks' rows are 0
        y_slots = torch.zeros(p, config.hidden_size, dtype=torch.float32, device=x.device)  # [P, H]
        for e in range(config.num_local_experts):
            y = act @ self._dequantized("w2", e).T                                # [P, H]
            if qc.w2.bias is not None:
                y = y + qc.w2.bias[e].float()
            y_slots = torch.where((slot_expert == e)[:, None], y * slot_weight[:, None], y_slots)
        return y_slots.view(-1, k, config.hidden_size).sum(dim=1)                 # [T, H]

    # Helpers ------------------------------------------------------------------------------------
    def _dequantized(self, name: str, e: int) -> torch.Tensor:
        """Local expert ``e``'s ``w13`` ``[N, H]`` or ``w2`` ``[H, I]`` in float32, alone."""
        data = self.weights.get(name)
        assert data is not None  # validated on construction
        scheme = self.config.scheme
        if scheme.weight is None:
            return data[e].float()
        from moe_oracle.quant import dequantize_weights

        desc = self.quant_config.w13 if name == "w13" else self.quant_config.w2

        def one(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[e:e + 1]

        return dequantize_weights(scheme, data[e:e + 1], scale=one(desc.scale), zero_point=one(desc.zero_point),
                                  global_scale=one(desc.global_scale))[0]


class BatchedReferenceExperts(ReferenceExperts):
    """The reference over the batched format ``[E_l, M, H]`` (``torch_batched``, batched dispatchers):
    the same float32 forward on the valid rows of every local expert's block, returning the expert
    outputs without the router weight (the batched finalize weights and combines them), as
    ``BatchedTritonExperts`` does. The oracle of batched experts' tests; not a registered backend
    (``BATCHED_REFERENCE_SPEC`` registers it where a test or benchmark needs the batched format on
    a CPU)."""

    activation_format: ClassVar[str] = "batched"

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[E_l, M, H]`` in ``hidden.dtype``: row j of block e is expert e on ``hidden[e, j]``
        for ``j < expert_num_tokens[e]``, zero past it.

        Parameters
        ----------
        hidden : torch.Tensor
            ``[E_l, M, H]`` in ``config.dtype``; rows past ``expert_num_tokens[e]`` are ignored.
        topk_weights, topk_ids, expert_map
            Unused: the block says which expert a row belongs to, and the finalize weights it.
        expert_num_tokens : torch.Tensor
            ``[E_l]`` int32/int64 valid rows per local expert.
        """
        config, qc = self.config, self.quant_config
        e_l, h = config.num_local_experts, config.hidden_size
        if expert_num_tokens is None:
            raise WeightError("expert_num_tokens", "the [E_l] valid-row counts of the batched format", "None")
        if hidden.dim() != 3 or hidden.shape[0] != e_l or hidden.shape[2] != h or hidden.dtype != config.dtype:
            raise WeightError("hidden", f"shape [E_l={e_l}, M, H={h}] dtype {config.dtype}",
                              f"shape {list(hidden.shape)} dtype {hidden.dtype}")
        m = hidden.shape[1]
        valid = torch.arange(m, device=hidden.device)[None, :] < expert_num_tokens.to(hidden.device)[:, None]  # [E_l, M]
        pair_expert = torch.arange(e_l, device=hidden.device)[:, None].expand(e_l, m)[valid]  # [R] local ids
        x = _fake_quantize(config, qc.a13, hidden[valid].float())                   # [R, H], all rows at once
        experts_hit = pair_expert.unique().tolist()
        i = config.intermediate_size_per_partition
        act = torch.empty(x.shape[0], i, dtype=torch.float32, device=hidden.device)  # [R, I]
        for e in experts_hit:
            rows = (pair_expert == e).nonzero().squeeze(1)
            y = x[rows] @ self._dequantized("w13", e).T                             # [M_e, N]
            if qc.w13.bias is not None:
                y = y + qc.w13.bias[e].float()
            act[rows] = _activation(config, y)
        act = _fake_quantize(config, qc.a2, act)                                     # [R, I]
        out = torch.zeros(x.shape[0], h, dtype=torch.float32, device=hidden.device)  # [R, H]
        for e in experts_hit:
            rows = (pair_expert == e).nonzero().squeeze(1)
            y = act[rows] @ self._dequantized("w2", e).T                            # [M_e, H]
            if qc.w2.bias is not None:
                y = y + qc.w2.bias[e].float()
            out[rows] = y
        result = torch.zeros(e_l, m, h, dtype=hidden.dtype, device=hidden.device)   # [E_l, M, H]
        result[valid] = out.to(hidden.dtype)
        return result


def _activation(config: MoEConfig, h: torch.Tensor) -> torch.Tensor:
    """``[M, N]`` -> ``[M, I]``: the activation of ``config``, in float32 (see the module docstring)."""
    if not config.is_gated:
        if config.activation == "relu2":
            return torch.relu(h).square()
        if config.activation == "silu":
            return F.silu(h)
        return F.gelu(h, approximate="none")
    i = config.intermediate_size_per_partition
    gate, up = h[:, :i], h[:, i:]                                                 # [M, I] each
    limit = config.swiglu_limit
    if limit is not None:
        gate = gate.clamp(max=limit)
        up = up.clamp(min=-limit, max=limit)
    if config.activation == "swigluoai":
        assert config.swiglu_alpha is not None  # defaulted by MoEConfig
        return (up + 1) * gate * torch.sigmoid(config.swiglu_alpha * gate)
    if config.activation == "silu":
        return F.silu(gate) * up
    return F.gelu(gate, approximate="none") * up


def _fake_quantize(config: MoEConfig, desc: QuantDesc, x: torch.Tensor) -> torch.Tensor:
    """Quantize then dequantize ``x`` ``[rows, cols]`` as a kernel quantizing this operand would."""
    if desc.key is None or x.numel() == 0:
        return x
    from moe_oracle.quant import fake_quantize_activation

    return fake_quantize_activation(config.scheme, x, scale=desc.scale)


def _check_quant_config(config: MoEConfig, qc: QuantConfig) -> None:
    """Every scale, zero point, global scale and bias the scheme needs is in the QuantConfig."""
    expected = expected_tensors(config)
    slots = {
        "w13_scale": qc.w13.scale, "w2_scale": qc.w2.scale,
        "w13_zero_point": qc.w13.zero_point, "w2_zero_point": qc.w2.zero_point,
        "w13_global_scale": qc.w13.global_scale, "w2_global_scale": qc.w2.global_scale,
        "a13_scale": qc.a13.scale, "a2_scale": qc.a2.scale,
        "w13_bias": qc.w13.bias, "w2_bias": qc.w2.bias,
    }
    for name, tensor in slots.items():
        spec = expected.get(name)
        if spec is not None and spec.required and tensor is None:
            raise WeightError(f"quant_config.{name}", f"a tensor with {spec.describe()} for scheme "
                              f"{config.scheme.name}", "None")
        if spec is None and tensor is not None:
            raise WeightError(f"quant_config.{name}", f"None (scheme {config.scheme.name}"
                              f"{'' if config.has_bias else ' without has_bias'} has no such tensor)", "a tensor")



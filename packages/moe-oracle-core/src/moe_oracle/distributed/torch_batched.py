"""``all2all="torch_batched"``: the batched format (per-local-expert padded buffers) over the same
token exchange as ``"torch"``, for batched experts such as ``batched_triton``.

    prepare   as "torch": each token once to each rank holding one of its experts    -> R rows
              then, on the receiver, one buffer row per (row, local expert) pair:
              buffer [E_l, M, H], row j of expert e valid for j < expert_num_tokens[e]
              (M = the most pairs any local expert got, at least 1; the rest is zero)
    experts   buffer -> [E_l, M, H] expert outputs, without the router weight
    finalize  sum_k weight * out[e(row, k), slot(row, k)] per received row             -> [R, H]
              back along the reverse splits, summed per token in float32               -> [T, H]

With ``apply_router_weight_on_input`` (top_k == 1) the weight scales the buffer row instead and
the combine adds the outputs unweighted.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch

from moe_oracle.distributed import payload
from moe_oracle.distributed.torch_a2a import TorchAll2AllPrepareFinalize, _Routes
from moe_oracle.kernel.modular import PrepareResult


class _Slots(NamedTuple):
    routes: _Routes
    row: torch.Tensor  # [Q] received row of each local pair
    expert: torch.Tensor  # [Q] local expert of each pair
    slot: torch.Tensor  # [Q] row of the pair inside its expert's buffer
    weight: torch.Tensor  # [Q] float32 router weight applied at the combine
    num_rows: int  # R


def assign_slots(local: torch.Tensor, num_local_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``local`` ``[Q]`` local expert of each pair -> (slot ``[Q]``: its row in that expert's
    buffer, in pair order; counts ``[E_l]`` int32)."""
    counts = torch.bincount(local, minlength=num_local_experts)                 # [E_l]
    order = torch.sort(local, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=local.device)
    return rank - starts[local], counts.to(torch.int32)


class TorchBatchedPrepareFinalize(TorchAll2AllPrepareFinalize):
    """Batched-format dispatch and combine with ``all_to_all_single``."""

    name: ClassVar[str] = "torch_batched"
    collectives: ClassVar[tuple[str, ...]] = ("all_to_all",)
    activation_format: ClassVar[str] = "batched"

    def prepare(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> PrepareResult:
        """hidden ``[T, H]``, topk_weights ``[T, K]``, topk_ids ``[T, K]`` -> PrepareResult(hidden
        ``[E_l, M, H]``, the received weights ``[R, K]`` and ids ``[R, K]``, expert_num_tokens ``[E_l]``)."""
        parts, routes = self._dispatch(hidden, topk_weights, topk_ids)
        *act, ids, weights = parts
        x = payload.decode(self.config, act)                                      # [R, H]
        r, k = ids.shape
        e_l = self.config.num_local_experts
        local = self.expert_map_on(ids.device).long()[ids.long()].reshape(-1)     # [R*K], -1 elsewhere
        here = (local >= 0).nonzero().squeeze(1)                                  # [Q] into R*K
        expert = local[here]
        row = here // k
        weight = weights.reshape(-1)[here]                                        # [Q]
        slot, counts = assign_slots(expert, e_l)
        m = max(1, int(counts.max())) if expert.numel() else 1                    # host read: buffer size
        rows = x[row]                                                             # [Q, H]
        if self.config.apply_router_weight_on_input:
            rows = (rows.float() * weight[:, None]).to(x.dtype)
            weight = torch.ones_like(weight)
        buffer = torch.zeros(e_l, m, x.shape[1], dtype=x.dtype, device=x.device)  # [E_l, M, H]
        buffer[expert, slot] = rows
        self._pending = _Slots(routes, row, expert, slot, weight, r)
        return PrepareResult(buffer, weights, ids.to(topk_ids.dtype), counts)

    def finalize(self, expert_output: torch.Tensor, prepared: PrepareResult) -> torch.Tensor:
        """expert_output ``[E_l, M, H]`` (unweighted) -> ``[T, H]`` new, in ``expert_output.dtype``."""
        s = self._pending
        if not isinstance(s, _Slots):
            raise RuntimeError(f"{type(self).__name__}.finalize: call prepare first")
        self._pending = None
        h = expert_output.shape[-1]
        partial = torch.zeros(s.num_rows, h, dtype=torch.float32, device=expert_output.device)  # [R, H]
        partial.index_add_(0, s.row, expert_output[s.expert, s.slot].float() * s.weight[:, None])
        back = self._combine(partial.to(expert_output.dtype), s.routes)           # [N, H]
        out = torch.zeros(s.routes.num_tokens, h, dtype=torch.float32, device=back.device)
        out.index_add_(0, s.routes.src_token, back.float())
        return out.to(expert_output.dtype)

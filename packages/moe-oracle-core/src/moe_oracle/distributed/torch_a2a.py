"""``all2all="torch"``: the standard format over ``all_to_all_single`` with variable splits.

    prepare   owners[topk_ids] -> the ranks each token must visit               [T, K] -> [T, P]
              one row per (token, rank) pair, sorted by rank then token         N rows, no padding
              exchange per-rank row counts (+ each rank's input verdict)        [P, 2] int64
              activations quantized once where the scheme does (``payload``), then
              rows = activation bytes | K expert ids | K router weights         all_to_all_single
    experts   the rows as a standard [R, H] batch with their K global ids; experts on other
              ranks are -1 in ``expert_map`` and contribute zero               -> [R, H], weighted
    finalize  the [R, H] partial sums back along the reverse splits              all_to_all_single
              summed per token in float32, in the original token order          -> [T, H]

A token goes once to each rank that holds at least one of its experts, whatever number of its
experts that rank holds, so a token costs at most min(K, P) rows of H activations (+ scales and
8*K bytes of ids and weights) each way, and nothing is padded to the largest rank.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch

from moe_oracle.distributed import payload
from moe_oracle.distributed.base import ExpertParallelPrepareFinalize
from moe_oracle.distributed.comm import pack_rows, unpack_rows
from moe_oracle.kernel.modular import PrepareResult


class _Routes(NamedTuple):
    src_token: torch.Tensor  # [N] token of each sent row, rows sorted by destination rank
    send: list[int]  # [P] rows sent to each rank
    recv: list[int]  # [P] rows received from each rank
    num_tokens: int  # T


def route_rows(owners: torch.Tensor, topk_ids: torch.Tensor, ep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``topk_ids`` ``[T, K]`` -> (src_token ``[N]``, rows per rank ``[P]``): one row per (token,
    rank) pair where the rank holds one of the token's experts, ordered by rank, then token."""
    t = topk_ids.shape[0]
    visits = torch.zeros(t, ep, dtype=torch.bool, device=topk_ids.device)
    # Clamped: out-of-range ids are reported by the flag beside the counts, not by an IndexError here.
    visits.scatter_(1, owners[topk_ids.long().clamp(0, owners.numel() - 1)], True)  # [T, P]
    pairs = visits.t().nonzero()                                              # [N, 2] (rank, token)
    return pairs[:, 1], visits.sum(dim=0)


class TorchAll2AllPrepareFinalize(ExpertParallelPrepareFinalize):
    """Standard-format dispatch and combine with ``all_to_all_single`` (gloo on CPU, NCCL on GPU)."""

    name: ClassVar[str] = "torch"
    collectives: ClassVar[tuple[str, ...]] = ("all_to_all",)
    activation_format: ClassVar[str] = "standard"

    def _dispatch(self, hidden: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor) -> tuple[list[torch.Tensor], _Routes]:
        """Send every token to the ranks holding its experts; return the received wire parts."""
        error, flag = self._check(hidden, topk_weights, topk_ids)
        ep = self.ep_size
        device = flag.device
        if error is None:
            src_token, per_rank = route_rows(self.owners_on(device), topk_ids, ep)
        else:
            src_token = torch.empty(0, dtype=torch.long, device=device)
            per_rank = torch.zeros(ep, dtype=torch.long, device=device)
        counts = torch.stack([per_rank, flag.expand(ep)], dim=1)                 # [P, 2]
        got = self.comm.exchange_counts(counts, operation="token counts (all_to_all_single)")  # [P, 2]
        if error is None and got[self.ep_rank, 1]:
            error = self._range_error(topk_ids)
        self.comm.check_flags(got[:, 1].tolist(), error, operation="prepare")
        send, recv = per_rank.tolist(), got[:, 0].tolist()
        parts = payload.encode(self.config, hidden)                               # quantized once, [T, ...]
        rows = pack_rows(*(p[src_token] for p in parts), topk_ids[src_token].to(torch.int32),
                         topk_weights[src_token])                                 # [N, B] uint8
        received = torch.empty(sum(recv), rows.shape[1], dtype=torch.uint8, device=device)  # [R, B]
        self.comm.all_to_all(received, rows, recv, send, phase="dispatch", operation="dispatch (all_to_all_single)")
        return unpack_rows(received, *self._row_layout()), _Routes(src_token, send, recv, hidden.shape[0])

    def prepare(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> PrepareResult:
        """hidden ``[T, H]``, topk_weights ``[T, K]`` float32, topk_ids ``[T, K]`` global ids ->
        PrepareResult(hidden ``[R, H]``, weights ``[R, K]``, ids ``[R, K]`` global) of the rows this
        rank received; the experts take ``expert_map`` (``self.expert_map_on(device)``)."""
        parts, routes = self._dispatch(hidden, topk_weights, topk_ids)
        *act, ids, weights = parts
        self._pending = routes
        return PrepareResult(payload.decode(self.config, act), weights, ids.to(topk_ids.dtype))

    def finalize(self, expert_output: torch.Tensor, prepared: PrepareResult) -> torch.Tensor:
        """expert_output ``[R, H]`` (weighted partial sums) -> ``[T, H]`` new, in ``expert_output.dtype``."""
        routes = self._take()
        back = self._combine(expert_output, routes)                              # [N, H]
        out = torch.zeros(routes.num_tokens, expert_output.shape[1], dtype=torch.float32, device=back.device)
        out.index_add_(0, routes.src_token, back.float())
        return out.to(expert_output.dtype)

    def _take(self) -> _Routes:
        routes = self._pending
        if routes is None:
            raise RuntimeError(f"{type(self).__name__}.finalize: call prepare first")
        self._pending = None
        return routes  # type: ignore[no-any-return]

    def _combine(self, rows: torch.Tensor, routes: _Routes) -> torch.Tensor:
        """``[R, H]`` results back to the ranks their tokens came from -> ``[N, H]`` (sent-row order)."""
        back = torch.empty(sum(routes.send), rows.shape[1], dtype=rows.dtype, device=rows.device)
        self.comm.all_to_all(back, rows.contiguous(), routes.send, routes.recv, phase="combine",
                             operation="combine (all_to_all_single)")
        return back

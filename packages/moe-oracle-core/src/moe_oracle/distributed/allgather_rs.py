"""``all2all="allgather_reducescatter"``: every rank sees every token, computes its local experts'
share, and a reduce-scatter returns each rank its own tokens' sums.

    prepare   all-gather the token counts (+ each rank's input verdict)          [P, 2] int64
              rows = activation bytes | K ids | K weights, padded to the largest rank's T_max
              all_gather_into_tensor                                            [P * T_max, B]
              padding dropped                                                    -> [sum T, H]
    experts   standard format on every rank's tokens; other ranks' experts contribute zero
    finalize  partial sums placed back into [P * T_max, H], reduce_scatter       -> [T_max, H]
              this rank's first T rows                                           -> [T, H]

Simple and robust (two dense collectives, no per-pair routing), at the cost of P * T_max rows of
traffic per rank each way: the choice for small ep groups or balanced, small batches.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch

from moe_oracle.distributed import payload
from moe_oracle.distributed.base import ExpertParallelPrepareFinalize
from moe_oracle.distributed.comm import pack_rows, unpack_rows
from moe_oracle.kernel.modular import PrepareResult


class _Gathered(NamedTuple):
    valid: torch.Tensor  # [sum T] rows of the gathered buffer that are real tokens
    t_max: int
    num_tokens: int  # T


class AllGatherReduceScatterPrepareFinalize(ExpertParallelPrepareFinalize):
    """Standard-format dispatch by all-gather, combine by reduce-scatter."""

    name: ClassVar[str] = "allgather_reducescatter"
    collectives: ClassVar[tuple[str, ...]] = ("all_gather", "reduce_scatter")
    activation_format: ClassVar[str] = "standard"

    def prepare(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> PrepareResult:
        """hidden ``[T, H]`` -> PrepareResult(hidden ``[sum T, H]`` of every rank's tokens, rank by
        rank, with their weights and global ids); the experts take ``expert_map``."""
        error, flag = self._check(hidden, topk_weights, topk_ids)
        device = flag.device
        t = hidden.shape[0] if error is None else 0
        mine = torch.stack([torch.tensor(t, dtype=torch.int64, device=device), flag])
        got = self.comm.all_gather_counts(mine, operation="token counts (all_gather)")  # [P, 2]
        if error is None and got[self.ep_rank, 1]:
            error = self._range_error(topk_ids)
        self.comm.check_flags(got[:, 1].tolist(), error, operation="prepare")
        sizes = got[:, 0].tolist()
        t_max = max(sizes)
        rows = pack_rows(*payload.encode(self.config, hidden), topk_ids.to(torch.int32), topk_weights)  # [T, B]
        padded = torch.zeros(t_max, rows.shape[1], dtype=torch.uint8, device=device)
        padded[:t] = rows
        gathered = torch.empty(self.ep_size * t_max, rows.shape[1], dtype=torch.uint8, device=device)
        self.comm.all_gather(gathered, padded, phase="dispatch", operation="dispatch (all_gather_into_tensor)")
        valid = torch.cat([torch.arange(n, device=device) + r * t_max for r, n in enumerate(sizes)])
        *act, ids, weights = unpack_rows(gathered[valid], *self._row_layout())
        self._pending = _Gathered(valid, t_max, t)
        return PrepareResult(payload.decode(self.config, act), weights, ids.to(topk_ids.dtype))

    def finalize(self, expert_output: torch.Tensor, prepared: PrepareResult) -> torch.Tensor:
        """expert_output ``[sum T, H]`` (weighted partial sums) -> ``[T, H]`` new."""
        g = self._pending
        if not isinstance(g, _Gathered):
            raise RuntimeError(f"{type(self).__name__}.finalize: call prepare first")
        self._pending = None
        h = expert_output.shape[1]
        full = torch.zeros(self.ep_size * g.t_max, h, dtype=expert_output.dtype, device=expert_output.device)
        full[g.valid] = expert_output
        out = torch.empty(g.t_max, h, dtype=expert_output.dtype, device=expert_output.device)
        self.comm.reduce_scatter(out, full, phase="combine", operation="combine (reduce_scatter_tensor)")
        return out[:g.num_tokens]

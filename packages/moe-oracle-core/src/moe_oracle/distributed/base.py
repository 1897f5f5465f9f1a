"""``ExpertParallelPrepareFinalize``: what every ``torch.distributed`` dispatcher shares.

Shape letters: T this rank's tokens, H hidden size, K top-k, E experts (global), E_l local experts,
R the token rows this rank receives, P the ranks of the expert-parallel group (``ep_size``).

A dispatcher holds the config, the expert-parallel process group (through ``Comm``), the expert
placement (``owners`` ``[E]``: the rank of each global expert; ``expert_map`` ``[E]``: global ->
local id here, -1 elsewhere) and the state one ``prepare`` leaves for its ``finalize`` (one forward
in flight per dispatcher, as a layer runs them).

Every rank checks its own inputs before the first collective and reports the verdict in the first
exchange (a flag beside the token counts): a rank whose inputs are wrong raises its ``InputError``
and every other rank a ``RemoteRankError`` naming it, at once, instead of waiting in a collective
until the group's timeout. A rank that raises before reaching the dispatcher at all (or dies)
leaves the others in that first collective until the timeout, then a ``DistributedError`` says so.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.distributed import payload
from moe_oracle.distributed.comm import Comm
from moe_oracle.distributed.placement import expert_map, expert_owners
from moe_oracle.errors import InputError
from moe_oracle.kernel.inputs import INDEX_DTYPES, check_tensor
from moe_oracle.kernel.modular import PrepareFinalize


class ExpertParallelPrepareFinalize(PrepareFinalize):
    """Base of the expert-parallel dispatchers; subclasses set ``name`` and ``collectives`` (the
    ``torch.distributed`` operations they need, checked against the group's backend when built)."""

    name: ClassVar[str] = ""
    collectives: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MoEConfig, group: Any = None) -> None:
        self.config = config
        self.group = group
        self.comm = Comm(group, dispatcher=self.name)
        self._owners = expert_owners(config)                                  # [E] int64
        self._expert_map = expert_map(config)                                 # [E] int32
        self._pending: Any = None

    @property
    def ep_rank(self) -> int:
        return self.comm.rank

    @property
    def ep_size(self) -> int:
        return self.comm.size

    @property
    def traffic(self) -> dict[str, int]:
        """Bytes this rank has sent to other ranks, by phase (``counts``, ``dispatch``, ``combine``)."""
        return self.comm.traffic

    def expert_map_on(self, device: torch.device) -> torch.Tensor:
        """``[E]`` int32 global -> local id on this rank (-1 elsewhere), on ``device``."""
        assert self._expert_map is not None  # ep_size > 1 for every dispatcher
        if self._expert_map.device != device:
            self._expert_map = self._expert_map.to(device)
        return self._expert_map

    def owners_on(self, device: torch.device) -> torch.Tensor:
        if self._owners.device != device:
            self._owners = self._owners.to(device)
        return self._owners

    # Inputs ------------------------------------------------------------------------------------
    def _check(self, hidden: torch.Tensor, topk_weights: torch.Tensor,
               topk_ids: torch.Tensor) -> tuple[InputError | None, torch.Tensor]:
        """Shapes and dtypes (host) and the id range (a device flag, read with the token counts).

        Returns the host-side error, if any, and an int64 0-D flag on the inputs' device: 1 when
        some check failed."""
        c = self.config
        try:
            check_tensor("hidden", hidden, ("T", c.hidden_size), (c.dtype,))
            t, device = hidden.shape[0], hidden.device
            check_tensor("topk_weights", topk_weights, (t, c.top_k), (torch.float32,), device)
            check_tensor("topk_ids", topk_ids, (t, c.top_k), INDEX_DTYPES, device)
        except InputError as exc:
            device = hidden.device if isinstance(hidden, torch.Tensor) else torch.device("cpu")
            return exc, torch.ones((), dtype=torch.int64, device=device)
        bad = ((topk_ids < 0) | (topk_ids >= c.num_experts)).any()
        return None, bad.to(torch.int64)

    def _range_error(self, topk_ids: torch.Tensor) -> InputError:
        lo, hi = int(topk_ids.min()), int(topk_ids.max())
        return InputError("topk_ids", f"global expert ids in [0, {self.config.num_experts})", f"ids in [{lo}, {hi}]")

    # Wire rows ---------------------------------------------------------------------------------
    def _row_layout(self) -> list[payload.Layout]:
        """One dispatched token: its activations (``payload``), its K global expert ids (int32) and
        its K router weights (float32)."""
        k = self.config.top_k
        return [*payload.layout(self.config), ((k,), torch.int32), ((k,), torch.float32)]

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} all2all={self.name!r} ep_rank={self.ep_rank}/{self.ep_size} "
                f"placement={self.config.parallel.placement!r} wire={payload.wire_quantization(self.config) or 'dtype'}>")

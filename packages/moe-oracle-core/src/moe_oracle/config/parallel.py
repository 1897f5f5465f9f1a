"""How a layer is split across devices: tensor, data and expert parallel sizes and ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from moe_oracle.config.validate import one_of, positive_int, rank_below

ALL2ALL_BACKENDS = (
    "none", "torch", "torch_batched", "allgather_reducescatter",
    "deepep_high_throughput", "deepep_low_latency",
)
# Dispatchers that hand experts a [E_local, max_tokens, H] buffer instead of [T, H] rows.
BATCHED_ALL2ALL = ("torch_batched", "deepep_low_latency")
# How global experts map to ranks (``moe_oracle.distributed.placement``): rank r holds experts
# [r*E_l, (r+1)*E_l) ("contiguous") or r, r+ep, r+2*ep, ... ("round_robin").
PLACEMENTS = ("contiguous", "round_robin")
ActivationFormat = Literal["standard", "batched"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParallelConfig:
    """Parallel layout of one MoE layer.

    ``all2all`` names the dispatch/combine used with expert parallelism; it decides the
    activation format the experts receive (``"batched"`` for ``torch_batched`` and
    ``deepep_low_latency``, else ``"standard"``). ``placement`` says which global experts each
    expert-parallel rank holds (``"contiguous"`` or ``"round_robin"``); the expert map follows it.
    """

    tp_size: int = 1
    dp_size: int = 1
    ep_size: int = 1
    tp_rank: int = 0
    dp_rank: int = 0
    ep_rank: int = 0
    all2all: str = "none"
    placement: str = "contiguous"

    def __post_init__(self) -> None:
        for name in ("tp", "dp", "ep"):
            size = positive_int(f"parallel.{name}_size", getattr(self, f"{name}_size"))
            rank_below(f"parallel.{name}_rank", getattr(self, f"{name}_rank"), size, f"{name}_size")
        one_of("parallel.all2all", self.all2all, ALL2ALL_BACKENDS)
        one_of("parallel.placement", self.placement, PLACEMENTS)
        if self.all2all != "none" and self.ep_size == 1:
            from moe_oracle.errors import ConfigError

            raise ConfigError("parallel.all2all", f"{self.all2all!r} needs ep_size > 1, got ep_size=1")

    @property
    def use_ep(self) -> bool:
        return self.ep_size > 1

    @property
    def use_all2all_kernels(self) -> bool:
        """Whether tokens travel between ranks through an all-to-all dispatcher."""
        return self.use_ep and self.all2all != "none"

    @property
    def activation_format(self) -> ActivationFormat:
        return "batched" if self.all2all in BATCHED_ALL2ALL else "standard"

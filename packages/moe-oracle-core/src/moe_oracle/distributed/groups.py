"""Process groups of one deployment: which world ranks form each expert-parallel and tensor-parallel
group, and checks that the world matches ``ParallelConfig``.

World layout (tensor parallel fastest, then expert parallel, then data parallel):

    world rank = (dp_rank * ep_size + ep_rank) * tp_size + tp_rank,  world size = dp * ep * tp

The expert-parallel group of a rank holds the ep_size ranks with its dp_rank and tp_rank: they
share tokens' experts, each with E/ep experts, and dispatch among themselves. The tensor-parallel
group holds the tp_size ranks with its dp_rank and ep_rank: the same experts, I/tp of each, the
same tokens; their outputs are partial sums over I that the model reduces over that group (as
without expert parallelism).
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from moe_oracle.config.parallel import ParallelConfig
from moe_oracle.errors import ConfigError

_groups: dict[tuple[object, ...], Any] = {}


def world_rank(p: ParallelConfig) -> int:
    """The world rank ``p``'s (dp, ep, tp) ranks have under the layout above."""
    return (p.dp_rank * p.ep_size + p.ep_rank) * p.tp_size + p.tp_rank


def ep_ranks(p: ParallelConfig) -> list[int]:
    """World ranks of ``p``'s expert-parallel group, by ep rank."""
    return [(p.dp_rank * p.ep_size + e) * p.tp_size + p.tp_rank for e in range(p.ep_size)]


def tp_ranks(p: ParallelConfig) -> list[int]:
    """World ranks of ``p``'s tensor-parallel group, by tp rank."""
    return [(p.dp_rank * p.ep_size + p.ep_rank) * p.tp_size + j for j in range(p.tp_size)]


def check_world(p: ParallelConfig) -> None:
    """``ConfigError`` unless torch.distributed is initialized with dp * ep * tp ranks and this
    process is the rank ``p``'s ranks name."""
    if not dist.is_available() or not dist.is_initialized():
        raise ConfigError("parallel", "torch.distributed is not initialized: call "
                          "torch.distributed.init_process_group first (gloo on CPU, nccl on GPUs)")
    world, rank = dist.get_world_size(), dist.get_rank()
    want = p.dp_size * p.ep_size * p.tp_size
    if world != want:
        raise ConfigError("parallel", f"world size {world} != dp_size*ep_size*tp_size = {p.dp_size}*{p.ep_size}*"
                          f"{p.tp_size} = {want}")
    if world_rank(p) != rank:
        raise ConfigError("parallel", f"this process is world rank {rank}, but dp_rank={p.dp_rank} ep_rank={p.ep_rank} "
                          f"tp_rank={p.tp_rank} is world rank {world_rank(p)} (world rank = (dp_rank*ep_size + "
                          "ep_rank)*tp_size + tp_rank)")


def _subgroup(p: ParallelConfig, kind: str) -> Any:
    """This rank's ep or tp group; every rank creates all of them, in the same order (new_group is
    collective over the world), once per world and layout."""
    key = (id(dist.group.WORLD), kind, p.dp_size, p.ep_size, p.tp_size)
    if key not in _groups:
        mine = None
        for d in range(p.dp_size):
            for other in range(p.tp_size if kind == "ep" else p.ep_size):
                q = (ParallelConfig(dp_size=p.dp_size, ep_size=p.ep_size, tp_size=p.tp_size, dp_rank=d, tp_rank=other)
                     if kind == "ep" else
                     ParallelConfig(dp_size=p.dp_size, ep_size=p.ep_size, tp_size=p.tp_size, dp_rank=d, ep_rank=other))
                ranks = ep_ranks(q) if kind == "ep" else tp_ranks(q)
                group = dist.new_group(ranks)
                if dist.get_rank() in ranks:
                    mine = group
        _groups[key] = mine
    return _groups[key]


def expert_parallel_group(p: ParallelConfig) -> Any:
    """This rank's expert-parallel group (the default group when it is the whole world)."""
    check_world(p)
    if p.ep_size == dist.get_world_size():
        return dist.group.WORLD
    return _subgroup(p, "ep")


def tensor_parallel_group(p: ParallelConfig) -> Any:
    """This rank's tensor-parallel group (to reduce the layer's partial outputs over)."""
    check_world(p)
    if p.tp_size == dist.get_world_size():
        return dist.group.WORLD
    return _subgroup(p, "tp")

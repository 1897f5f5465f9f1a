"""Expert placement: which global experts each expert-parallel rank holds, in which local order.

E experts over ``ep`` ranks, ``E_l = E / ep`` each (``MoEConfig`` refuses E not divisible by ep):

    contiguous   rank r holds [r*E_l, (r+1)*E_l)     global g -> rank g // E_l, local g % E_l
    round_robin  rank r holds r, r+ep, r+2*ep, ...   global g -> rank g % ep,   local g // ep

A rank loads its experts' canonical weights in local order, ``w13[local_experts(config)]`` of the
full ``[E, 2*I, H]`` tensor; ``expert_map`` is the ``[E]`` global -> local map the experts take
(-1 for another rank's expert). Everything here is a pure function of ``config.parallel``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from moe_oracle.config.moe import MoEConfig


def owner(config: MoEConfig, expert: int) -> int:
    """The ep rank holding global expert ``expert``."""
    ep, local = config.parallel.ep_size, config.num_local_experts
    return expert % ep if config.parallel.placement == "round_robin" else expert // local


def local_experts(config: MoEConfig, ep_rank: int | None = None) -> list[int]:
    """Global ids of ``ep_rank``'s experts (this config's rank by default), in local-id order."""
    p = config.parallel
    r = p.ep_rank if ep_rank is None else ep_rank
    local = config.num_local_experts
    if p.placement == "round_robin":
        return [r + j * p.ep_size for j in range(local)]
    return list(range(r * local, (r + 1) * local))


def expert_owners(config: MoEConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[E]`` int64: the ep rank holding each global expert."""
    import torch

    g = torch.arange(config.num_experts, device=device)
    p = config.parallel
    return g % p.ep_size if p.placement == "round_robin" else g // config.num_local_experts


def expert_map(config: MoEConfig, device: torch.device | str = "cpu",
               ep_rank: int | None = None) -> torch.Tensor | None:
    """``[E]`` int32 global -> local id on ``ep_rank`` (this config's by default), -1 elsewhere;
    ``None`` without expert parallelism (every expert is local)."""
    import torch

    if config.parallel.ep_size == 1:
        return None
    out = torch.full((config.num_experts,), -1, dtype=torch.int32, device=device)
    ids = torch.tensor(local_experts(config, ep_rank), dtype=torch.long, device=device)
    out[ids] = torch.arange(ids.numel(), dtype=torch.int32, device=device)
    return out

"""Expert parallelism over ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

    config = MoEConfig(..., parallel=ParallelConfig(ep_size=4, ep_rank=rank, all2all="torch"))
    layer = MoELayer(config)              # builds make_prepare_finalize(config) itself; rank 0 selects
    layer.load_weights(w13=w13_full[local_experts(config)], ...)   # [E/ep, 2*I, H] in local order
    out = layer(hidden, router_logits)    # this rank's tokens in, this rank's tokens' outputs out

The dispatchers (``DISPATCHERS``: data, one row each):

- ``"torch"``: standard format, all-to-all with variable splits (``torch_a2a``);
- ``"torch_batched"``: batched format ``[E_l, M, H]`` for batched experts (``torch_batched``);
- ``"allgather_reducescatter"``: all-gather tokens and routing, reduce-scatter outputs (``allgather_rs``).

Placement (``placement``), the world's group layout (``groups``), and agreement across ranks
(``agree``) are their own modules; failures are ``DistributedError`` / ``RemoteRankError`` (``comm``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moe_oracle.config.parallel import BATCHED_ALL2ALL
from moe_oracle.errors import ConfigError

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.distributed.base import ExpertParallelPrepareFinalize


@dataclass(frozen=True, kw_only=True)
class DispatcherSpec:
    """One expert-parallel dispatcher: its name (``ParallelConfig.all2all``), the activation format
    it hands experts, the ``torch.distributed`` collectives it needs, and its class (lazy path)."""

    name: str
    activation_format: str
    collectives: tuple[str, ...]
    cls: str
    description: str

    def load(self) -> type[ExpertParallelPrepareFinalize]:
        module, _, attr = self.cls.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


DISPATCHERS: dict[str, DispatcherSpec] = {s.name: s for s in (
    DispatcherSpec(name="torch", activation_format="standard", collectives=("all_to_all",),
                   cls="moe_oracle.distributed.torch_a2a:TorchAll2AllPrepareFinalize",
                   description="all_to_all_single with variable splits; each token once per rank it visits"),
    DispatcherSpec(name="torch_batched", activation_format="batched", collectives=("all_to_all",),
                   cls="moe_oracle.distributed.torch_batched:TorchBatchedPrepareFinalize",
                   description="the 'torch' exchange, then per-local-expert padded buffers [E_l, M, H]"),
    DispatcherSpec(name="allgather_reducescatter", activation_format="standard",
                   collectives=("all_gather", "reduce_scatter"),
                   cls="moe_oracle.distributed.allgather_rs:AllGatherReduceScatterPrepareFinalize",
                   description="all-gather every token, local experts, reduce-scatter the outputs"),
)}
assert all((s.activation_format == "batched") == (s.name in BATCHED_ALL2ALL) for s in DISPATCHERS.values())


def make_prepare_finalize(config: MoEConfig, group: Any = None) -> ExpertParallelPrepareFinalize:
    """The ``PrepareFinalize`` for ``config.parallel.all2all`` over ``group``.

    ``group`` is the expert-parallel process group (``ep_size`` ranks, this process at ``ep_rank``);
    ``None`` derives it from the initialized world, which must hold dp_size * ep_size * tp_size
    ranks laid out as ``moe_oracle.distributed.groups`` says (a collective call when tp or dp > 1:
    every rank builds its layers in the same order).

    Raises
    ------
    ConfigError
        No expert-parallel all2all is configured, the dispatcher is not one moe-oracle ships, the
        world or the group does not match ``config.parallel``, or the group's backend lacks a
        collective the dispatcher needs.
    """
    import torch.distributed as dist

    from moe_oracle.distributed.comm import BACKEND_COLLECTIVES
    from moe_oracle.distributed.groups import check_world, expert_parallel_group

    p = config.parallel
    if not p.use_all2all_kernels:
        raise ConfigError("parallel.all2all", f"{p.all2all!r} with ep_size={p.ep_size} dispatches nothing: "
                          "use the local PrepareFinalize (MoELayer does)")
    spec = DISPATCHERS.get(p.all2all)
    if spec is None:
        raise ConfigError("parallel.all2all", f"{p.all2all!r} is not a dispatcher moe-oracle ships (it needs its "
                          "vendor plugin)", allowed=tuple(DISPATCHERS))
    if group is None:
        group = expert_parallel_group(p)
    else:
        if not dist.is_available() or not dist.is_initialized():
            check_world(p)  # raises the "not initialized" error
        size, rank = dist.get_world_size(group), dist.get_rank(group)
        if size != p.ep_size:
            raise ConfigError("parallel.ep_size", f"{p.ep_size}, but the process group has {size} ranks")
        if rank != p.ep_rank:
            raise ConfigError("parallel.ep_rank", f"{p.ep_rank}, but this process is rank {rank} of the process group")
    backend = str(dist.get_backend(group)).lower()
    have = BACKEND_COLLECTIVES.get(backend)
    missing = [c for c in spec.collectives if have is not None and c not in have]
    if missing:
        fits = [s.name for s in DISPATCHERS.values() if have is not None and set(s.collectives) <= have]
        raise ConfigError("parallel.all2all", f"{spec.name!r} needs {', '.join(missing)}, which the {backend} process "
                          "group lacks", allowed=fits)
    return spec.load()(config, group)


def __getattr__(name: str) -> Any:
    lazy = {
        "ExpertParallelPrepareFinalize": "moe_oracle.distributed.base",
        "TorchAll2AllPrepareFinalize": "moe_oracle.distributed.torch_a2a",
        "TorchBatchedPrepareFinalize": "moe_oracle.distributed.torch_batched",
        "AllGatherReduceScatterPrepareFinalize": "moe_oracle.distributed.allgather_rs",
        "DistributedError": "moe_oracle.distributed.comm",
        "RemoteRankError": "moe_oracle.distributed.comm",
        "agree": "moe_oracle.distributed.agree",
        "agree_selection": "moe_oracle.distributed.agree",
        "local_experts": "moe_oracle.distributed.placement",
        "expert_map": "moe_oracle.distributed.placement",
        "expert_parallel_group": "moe_oracle.distributed.groups",
        "tensor_parallel_group": "moe_oracle.distributed.groups",
    }
    if name in lazy:
        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'moe_oracle.distributed' has no attribute {name!r}")


__all__ = [
    "DISPATCHERS", "AllGatherReduceScatterPrepareFinalize", "DispatcherSpec", "DistributedError",
    "ExpertParallelPrepareFinalize", "RemoteRankError", "TorchAll2AllPrepareFinalize", "TorchBatchedPrepareFinalize",
    "agree", "agree_selection", "expert_map", "expert_parallel_group", "local_experts", "make_prepare_finalize",
    "tensor_parallel_group",
]

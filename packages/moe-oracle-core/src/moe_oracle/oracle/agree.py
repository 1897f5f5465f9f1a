"""Ranks agree on a measured plan: rank 0 decides (measures or reads its cache), every rank runs it.

Under ``torch.distributed`` (initialized, more than one rank in ``group``), rank 0 of the group
computes the payload and broadcasts it as a picklable object; the other ranks never measure and
never read their own caches. An error on rank 0 is broadcast too and raised on every rank, so no
rank waits for a broadcast that never comes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


def distributed_group(group: Any = None) -> tuple[bool, int]:
    """``(active, rank)``: whether a broadcast is needed and this process's rank in ``group``."""
    try:
        import torch.distributed as dist
    except ImportError:
        return False, 0
    if not (dist.is_available() and dist.is_initialized()):
        return False, 0
    if dist.get_world_size(group) <= 1:
        return False, 0
    return True, dist.get_rank(group)


def agree(decide: Callable[[], _T], *, group: Any = None) -> tuple[_T, bool]:
    """``(decide() on rank 0, received)``: ``received`` is True on ranks that got it from rank 0."""
    active, rank = distributed_group(group)
    if not active:
        return decide(), False
    import torch
    import torch.distributed as dist

    src = dist.get_global_rank(group, 0) if group is not None else 0
    device = None
    if dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = ("ok", decide())
        except Exception as exc:
            box[0] = ("error", f"{type(exc).__name__}: {exc}")
            dist.broadcast_object_list(box, src=src, group=group, device=device)
            raise
    dist.broadcast_object_list(box, src=src, group=group, device=device)
    status, value = box[0]
    if status == "error":
        raise RuntimeError(f"rank 0 failed to decide the measured plan: {value}")
    return value, rank != 0

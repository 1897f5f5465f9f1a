"""Agreement across ranks: rank 0 decides, the others receive, and everyone fails together.

    rank 0      decide() -> value, or the error it raised
    broadcast   (value | error) to every rank                        broadcast_object_list
    others      accept(value) -> their own result, or their error    (rank 0: its decision)
    all-gather  every rank's verdict                                 all_gather_object
    all         return, or raise: a rank's own error, or a RemoteRankError naming the failed ranks

The selection of a layer goes through it (``agree_selection``): the others run rank 0's backend,
forced, so a rank whose platform cannot run it fails at construction on every rank, never at the
first forward. Anything else rank 0 alone should decide (a measured plan, tuned configs) can.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import torch.distributed as dist

from moe_oracle.distributed.comm import DistributedError, RemoteRankError

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.oracle.base import MoEKernelOracle
    from moe_oracle.oracle.report import Selection
    from moe_oracle.platform import Platform

T = TypeVar("T")
R = TypeVar("R")


def agree(decide: Callable[[], T], accept: Callable[[T], R], *, group: Any = None, what: str = "decide") -> R | T:
    """Run ``decide`` on the group's rank 0 and ``accept(decision)`` on the others; return rank 0's
    decision there and each other rank's ``accept`` result there. Decisions must pickle."""
    rank = dist.get_rank(group)
    src = dist.get_global_rank(group, 0) if group is not None and group is not dist.group.WORLD else 0
    box: list[Any] = [None]
    error: BaseException | None = None
    decision: Any = None
    if rank == 0:
        try:
            decision = decide()
            box[0] = ("ok", decision)
        except Exception as exc:
            error = exc
            box[0] = ("error", f"{type(exc).__name__}: {exc}")
    _call(lambda: dist.broadcast_object_list(box, src=src, group=group), what, rank)
    status, value = box[0]
    if status == "error":
        if error is not None:
            raise error
        raise RemoteRankError(f"rank 0 failed to {what}, so every rank stops: {value}", ranks=[0], messages=[value],
                              operation=what, rank=rank)
    result: Any = decision
    verdict = "ok"
    if rank != 0:
        try:
            result = accept(value)
        except Exception as exc:
            error, verdict = exc, f"{type(exc).__name__}: {exc}"
    verdicts: list[Any] = [None] * dist.get_world_size(group)
    _call(lambda: dist.all_gather_object(verdicts, verdict, group=group), what, rank)
    failed = [(r, v) for r, v in enumerate(verdicts) if v != "ok"]
    if error is not None:
        raise error
    if failed:
        raise RemoteRankError(f"rank(s) {[r for r, _ in failed]} could not follow rank 0's decision to {what}: "
                              + "; ".join(f"rank {r}: {v}" for r, v in failed),
                              ranks=[r for r, _ in failed], messages=[v for _, v in failed], operation=what, rank=rank)
    return result  # type: ignore[no-any-return]


def agree_selection(oracle: MoEKernelOracle, config: MoEConfig, platform: Platform | None, *, group: Any = None,
                    backend: str | None = None, exclude: str | Iterable[str] | None = None,
                    prefer: str | Iterable[str] | None = None, strict: bool | None = None) -> Selection:
    """The layer's selection, the same on every rank of ``group``: rank 0 selects with the user's
    overrides (and ``strict``); the others select rank 0's backend, forced (their report says so)."""
    mine: list[Selection] = []

    def decide() -> str:
        mine.append(oracle.select_backend(config, platform, backend=backend, exclude=exclude, prefer=prefer,
                                          strict=strict))
        return mine[0].backend

    def accept(name: str) -> Selection:
        return oracle.select_backend(config, platform, backend=name)

    chosen = agree(decide, accept, group=group, what="select the backend")
    return mine[0] if mine else chosen  # type: ignore[return-value]


def _call(fn: Callable[[], object], what: str, rank: int) -> None:
    try:
        fn()
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"agreeing to {what} failed on rank {rank}; another rank probably raised, stopped "
                               f"or never reached this point: {exc}", operation=what, rank=rank) from exc

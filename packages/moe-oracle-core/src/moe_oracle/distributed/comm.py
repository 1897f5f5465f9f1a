"""The collectives the dispatchers use, over ``torch.distributed`` only, each failing clearly.

Every call goes through ``Comm``, which

- names the dispatcher, the phase and the operation in a ``DistributedError`` when the collective
  fails or times out (the group's ``timeout``: a peer that raised, stopped or never arrived);
- counts the bytes this rank sends to *other* ranks, per phase (``traffic``), for the benchmark;
- moves mixed-dtype rows as one byte tensor (``pack_rows`` / ``unpack_rows``), so a dispatch is one
  collective whatever it carries (fp8 activations, their scales, expert ids, router weights), and
  dtypes that gloo cannot reduce or send (float8) travel as bytes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from moe_oracle.errors import MoEOracleError


class DistributedError(MoEOracleError, RuntimeError):
    """A collective failed or timed out; ``dispatcher``, ``operation``, ``rank`` say where."""

    def __init__(self, message: str, *, dispatcher: str = "", operation: str = "", rank: int = -1) -> None:
        self.dispatcher = dispatcher
        self.operation = operation
        self.rank = rank
        super().__init__(message)


class RemoteRankError(DistributedError):
    """Another rank reported a failure; ``ranks`` lists them and ``messages`` what they said."""

    def __init__(self, message: str, *, ranks: Sequence[int], messages: Sequence[str] = (),
                 dispatcher: str = "", operation: str = "", rank: int = -1) -> None:
        self.ranks = tuple(ranks)
        self.messages = tuple(messages)
        super().__init__(message, dispatcher=dispatcher, operation=operation, rank=rank)


# Collectives each torch.distributed backend provides (those the dispatchers need). A backend
# missing here is not known to lack any.
BACKEND_COLLECTIVES: dict[str, frozenset[str]] = {
    "gloo": frozenset({"all_to_all", "all_gather", "reduce_scatter", "broadcast"}),
    "nccl": frozenset({"all_to_all", "all_gather", "reduce_scatter", "broadcast"}),
    "mpi": frozenset({"all_to_all", "all_gather", "broadcast"}),
}

_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class Comm:
    """One dispatcher's view of its process group (the expert-parallel group)."""

    def __init__(self, group: Any, *, dispatcher: str) -> None:
        self.group = group
        self.dispatcher = dispatcher
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.traffic: dict[str, int] = defaultdict(int)  # phase -> bytes sent to other ranks

    def _fail(self, operation: str, exc: BaseException) -> DistributedError:
        timeout = _timeout_of(self.group)
        waited = f" (group timeout {timeout:g} s)" if timeout is not None else ""
        return DistributedError(
            f"{self.dispatcher}: {operation} failed on ep rank {self.rank} of {self.size}{waited}; another rank "
            f"probably raised, stopped or never reached this collective: {exc}",
            dispatcher=self.dispatcher, operation=operation, rank=self.rank)

    def _run(self, operation: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except (RuntimeError, ValueError) as exc:  # gloo and NCCL raise RuntimeError subclasses
            raise self._fail(operation, exc) from exc

    def all_to_all(self, out: torch.Tensor, inp: torch.Tensor, out_splits: list[int], in_splits: list[int], *,
                   phase: str, operation: str) -> None:
        """``all_to_all_single`` with variable splits along dim 0 (rows); ``out`` is written in place."""
        row = math.prod(inp.shape[1:]) * inp.element_size()
        self.traffic[phase] += row * (sum(in_splits) - in_splits[self.rank])
        self._run(operation, lambda: dist.all_to_all_single(out, inp, out_splits, in_splits, group=self.group))

    def all_gather(self, out: torch.Tensor, inp: torch.Tensor, *, phase: str, operation: str) -> None:
        """``out`` ``[size * n, ...]`` in place from every rank's ``inp`` ``[n, ...]``."""
        self.traffic[phase] += inp.numel() * inp.element_size() * (self.size - 1)
        self._run(operation, lambda: _all_gather(out, inp, group=self.group))

    def reduce_scatter(self, out: torch.Tensor, inp: torch.Tensor, *, phase: str, operation: str) -> None:
        """``out`` ``[n, ...]`` in place: the sum over ranks of their ``inp`` ``[size * n, ...]`` slice."""
        self.traffic[phase] += out.numel() * out.element_size() * (self.size - 1)
        self._run(operation, lambda: _reduce_scatter(out, inp, group=self.group))

    def exchange_counts(self, send: torch.Tensor, *, operation: str) -> torch.Tensor:
        """``send`` ``[size, C]`` int64 (row j goes to rank j) -> ``[size, C]`` (row j came from rank j),
        on the host. Column 0 carries row counts, the last column a failure flag (see ``check_flags``)."""
        recv = torch.empty_like(send)
        self.traffic["counts"] += send[0].numel() * send.element_size() * (self.size - 1)
        self._run(operation, lambda: dist.all_to_all_single(recv, send.contiguous(), group=self.group))
        return recv.cpu()

    def all_gather_counts(self, mine: torch.Tensor, *, operation: str) -> torch.Tensor:
        """``mine`` ``[C]`` int64 -> ``[size, C]`` on the host (row j from rank j)."""
        out = torch.empty(self.size * mine.numel(), dtype=mine.dtype, device=mine.device)
        self.traffic["counts"] += mine.numel() * mine.element_size() * (self.size - 1)
        self._run(operation, lambda: _all_gather(out, mine.reshape(-1).contiguous(), group=self.group))
        return out.reshape(self.size, *mine.shape).cpu()

    def check_flags(self, flags: list[int], error: BaseException | None, *, operation: str) -> None:
        """Raise on every rank when one flagged a failure in the same exchange: the flagging rank
        raises its own ``error``, the others a ``RemoteRankError`` naming it, without waiting for a
        timeout."""
        bad = [r for r, f in enumerate(flags) if f]
        if error is not None:
            raise error
        if bad:
            raise RemoteRankError(
                f"{self.dispatcher}: ep rank(s) {bad} rejected their inputs in {operation} and raised there; "
                f"ep rank {self.rank} stops too (see those ranks' errors)",
                ranks=bad, dispatcher=self.dispatcher, operation=operation, rank=self.rank)


def _timeout_of(group: Any) -> float | None:
    try:
        backend = (group or dist.group.WORLD)._get_backend(torch.device("cpu"))  # type: ignore[union-attr]
        return float(backend.options._timeout.total_seconds())
    except Exception:  # private API: the timeout is a courtesy in the message
        return None


# Rows of mixed dtypes as one byte tensor --------------------------------------------------------
def row_bytes(*parts: tuple[tuple[int, ...], torch.dtype]) -> int:
    """Bytes of one packed row holding a ``shape`` of ``dtype`` per part."""
    return sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in parts)


def pack_rows(*tensors: torch.Tensor) -> torch.Tensor:
    """``[N, ...]`` tensors of any dtypes -> ``[N, B]`` uint8, each row their bytes side by side."""
    n = tensors[0].shape[0]
    views = []
    for t in tensors:
        width = math.prod(t.shape[1:]) * t.element_size()
        views.append(t.contiguous().view(torch.uint8).reshape(n, width) if n else
                     torch.empty(0, width, dtype=torch.uint8, device=t.device))
    return torch.cat(views, dim=1) if len(views) > 1 else views[0]


def unpack_rows(packed: torch.Tensor, *layout: tuple[tuple[int, ...], torch.dtype]) -> list[torch.Tensor]:
    """Inverse of ``pack_rows``: ``[N, B]`` uint8 -> one ``[N, *shape]`` tensor of ``dtype`` per part."""
    n = packed.shape[0]
    out, offset = [], 0
    for shape, dtype in layout:
        width = row_bytes((shape, dtype))
        chunk = packed[:, offset:offset + width]
        offset += width
        if n == 0:
            out.append(torch.empty(0, *shape, dtype=dtype, device=packed.device))
        else:
            out.append(chunk.contiguous().view(dtype).reshape(n, *shape))
    return out

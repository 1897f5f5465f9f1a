"""Merging every package's priority hints into one order, written once.

The rule: each candidate starts at its spec's ``rank``; a conditional rank hint that applies
replaces it (several: the largest). ``before``/``after`` hints that apply add edges. The order is
the stable topological sort of those edges that, among the candidates free to go next, always
takes the lowest (rank, registration index). Edges that contradict each other raise
``PriorityCycleError`` naming every edge of the cycle with its package and reason. A hint whose
``when`` raises (``SystemExit`` included) is ignored, and recorded in ``Ranked.ignored`` with the
error and the package that declared it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from moe_oracle.errors import PriorityCycleError

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.platform import Platform
    from moe_oracle.spec import BackendSpec, PriorityHint


@dataclass
class Ranked:
    """One candidate's place: its effective rank and the hints that shaped it."""

    spec: BackendSpec
    rank: int
    hints: list[PriorityHint] = field(default_factory=list)
    ignored: list[tuple[PriorityHint, str]] = field(default_factory=list)  # (hint, why it was ignored)


def merge_order(specs: list[BackendSpec], hints: list[PriorityHint],
                config: MoEConfig, platform: Platform) -> list[Ranked]:
    """Order ``specs`` (in registration order) by every applicable hint in ``hints``.

    ``hints`` carry ``target`` resolved (the registry fills it for spec-carried hints).
    """
    names = [s.name for s in specs]
    index = {name: i for i, name in enumerate(names)}
    ranked = {s.name: Ranked(s, s.rank) for s in specs}
    conditional_rank: dict[str, int] = {}
    edges: dict[tuple[str, str], PriorityHint] = {}
    for hint in hints:
        target = hint.target
        if target not in ranked or not _applies(hint, ranked[target], config, platform):
            continue
        ranked[target].hints.append(hint)
        if hint.rank is not None:
            if hint.when is None:
                ranked[target].rank = hint.rank if target not in conditional_rank else ranked[target].rank
            else:
                conditional_rank[target] = max(conditional_rank.get(target, hint.rank), hint.rank)
        for pattern in hint.before:
            for other in _matching(pattern, names, target):
                edges.setdefault((target, other), hint)
        for pattern in hint.after:
            for other in _matching(pattern, names, target):
                edges.setdefault((other, target), hint)
    for name, rank in conditional_rank.items():
        ranked[name].rank = rank
    order = _topological(names, edges, lambda n: (ranked[n].rank, index[n]))
    return [ranked[n] for n in order]


def _applies(hint: PriorityHint, target: Ranked, config: MoEConfig, platform: Platform) -> bool:
    from moe_oracle.errors import contained, describe_fault

    try:
        return hint.applies(config, platform)
    except BaseException as exc:
        if not contained(exc):
            raise
        describe = hint.when.describe if hint.when is not None else "?"
        target.ignored.append((hint, f"condition {describe!r} raised {describe_fault(exc)}"))
        return False


def _matching(pattern: str, names: list[str], target: str) -> list[str]:
    return [n for n in names if n != target and fnmatchcase(n, pattern)]


def _topological(names: list[str], edges: dict[tuple[str, str], PriorityHint],
                 key: Callable[[str], tuple[int, int]]) -> list[str]:
    succ: dict[str, list[str]] = {n: [] for n in names}
    indegree = dict.fromkeys(names, 0)
    for a, b in edges:
        succ[a].append(b)
        indegree[b] += 1
    heap = [(key(n), n) for n in names if indegree[n] == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, n = heapq.heappop(heap)
        out.append(n)
        for m in succ[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                heapq.heappush(heap, (key(m), m))
    if len(out) < len(names):
        raise PriorityCycleError(_cycle(set(names) - set(out), succ, edges))
    return out


def _cycle(stuck: set[str], succ: dict[str, list[str]],
           edges: dict[tuple[str, str], PriorityHint]) -> list[tuple[str, str, str, str]]:
    """Walk successors inside the stuck set until a node repeats; return that loop's edges."""
    node = min(stuck)
    path: list[str] = []
    seen: dict[str, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(m for m in sorted(succ[node]) if m in stuck)
    loop = [*path[seen[node]:], node]
    out = []
    for a, b in itertools.pairwise(loop):
        hint = edges[(a, b)]
        out.append((a, b, hint.source or "?", hint.reason))
    return out

"""This package's priority hints: none today. ``aiter`` (rank 10) goes before core's ``triton`` (50)
and ``reference`` (last) by rank alone, so no rule needs to restate the order."""

from __future__ import annotations

from moe_oracle.plugin import PriorityHint


def priority_hints() -> list[PriorityHint]:
    """This package's hints, for its ``moe_oracle.backends`` entry point."""
    return []

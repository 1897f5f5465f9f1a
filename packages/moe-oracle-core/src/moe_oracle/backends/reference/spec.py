"""Spec of the ``reference`` backend: serves every scheme on every vendor, always last.

``BATCHED_REFERENCE_SPEC`` is its batched-format twin (``batched_reference``). Core does not
register it, so selection never lands on it; a test or benchmark that runs a batched dispatcher on
a CPU registers it (``registry().register(BATCHED_REFERENCE_SPEC, source="tests")``)."""

from __future__ import annotations

from moe_oracle.config.quant import SCHEME_NAMES
from moe_oracle.spec import BackendSpec, PriorityHint

REFERENCE_RANK = 1_000_000

REFERENCE_SPEC = BackendSpec(
    name="reference",
    experts="moe_oracle.backends.reference.experts:ReferenceExperts",
    vendors=frozenset({"*"}),
    schemes=frozenset(SCHEME_NAMES),
    rank=REFERENCE_RANK,
    hints=(PriorityHint(after=("*",), reason="the float32 reference is for correctness, never for speed"),),
    description="pure-torch float32 experts from dequantized weights; the correctness oracle",
)

BATCHED_REFERENCE_SPEC = BackendSpec(
    name="batched_reference",
    experts="moe_oracle.backends.reference.experts:BatchedReferenceExperts",
    vendors=frozenset({"*"}),
    schemes=frozenset(SCHEME_NAMES),
    activation_format="batched",
    rank=REFERENCE_RANK,
    # A rank, not after=("*",): with the reference's own after=("*",) that would be a cycle. The two
    # never compete (one takes the standard format, the other the batched one).
    hints=(PriorityHint(rank=REFERENCE_RANK, reason="the float32 reference is for correctness, never for speed"),),
    description="the float32 reference over the batched [E_l, M, H] format (not registered by core)",
)

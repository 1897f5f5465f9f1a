"""Spec of the ``reference`` backend: serves every scheme on every vendor, always last."""

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

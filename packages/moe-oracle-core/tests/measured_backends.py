"""Test backends for the measured policy: correct experts (the reference's math) that differ only in
name, layout and how they fail, so plans can be checked against a deterministic timer."""

from __future__ import annotations

import sys
import types
from collections import Counter
from typing import Any, ClassVar

import torch

import moe_oracle
from moe_oracle import BackendSpec, CanonicalWeights, KernelWeights, MoEConfig
from moe_oracle.backends.reference.experts import ReferenceExperts
from moe_oracle.kernel.modular import ExpertsModular
from moe_oracle.kernel.tuning import Tuning

CALLS: Counter[str] = Counter()          # forwards per backend (and launch config)
TINY = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=64, dtype="fp32")


class _Experts(ExpertsModular):
    activation_format: ClassVar[str] = "standard"
    name: ClassVar[str] = ""

    def __init__(self, config: Any, quant_config: Any, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        weights.require(self.name)
        tensors = {k: v for k, v in weights.tensors.items()}
        self.ref = ReferenceExperts(config, quant_config, KernelWeights(backend="reference", config=config,
                                                                        tensors=tensors))
        self.launch: str | None = None

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, **kw: Any) -> torch.Tensor:
        CALLS[self.name + (f"[{self.launch}]" if self.launch else "")] += 1
        return self.ref.apply(hidden, topk_weights, topk_ids, **kw)


class Small(_Experts):
    name = "tg_small"


class Big(_Experts):
    name = "tg_big"


class Other(_Experts):
    name = "tg_other"


class Broken(_Experts):
    name = "tg_broken"

    def apply(self, hidden: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        raise RuntimeError("kernel launch failed: too many resources requested")


class Nan(_Experts):
    name = "tg_nan"

    def apply(self, hidden: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        return torch.full_like(hidden, float("nan"))


def convert_other(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Layout "w31": canonical tensors plus a copy (what a second layout costs)."""
    return KernelWeights(backend="tg_other", config=config, tensors=dict(weights.items()), layout="w31",
                         extras={"copy": weights.w13.clone()})


class SmallTuning(Tuning):
    """Two launch configs, "a" and "b": the search keeps the faster."""

    def search(self, config: MoEConfig, num_tokens: int, run: Any) -> tuple[dict[str, Any], float]:
        best = min(({"tile": t} for t in ("a", "b")), key=run)
        return best, run(best)

    def apply(self, experts: Any, kernel_config: Any) -> None:
        experts.launch = kernel_config["tile"] if kernel_config else None


SMALL_TUNING = SmallTuning()


def install() -> None:
    """Register the five test backends in a fresh registry (on every vendor: the real CPU's too)."""
    module = types.ModuleType("measured_backends_impl")
    for cls in (Small, Big, Other, Broken, Nan):
        setattr(module, cls.__name__, cls)
    module.convert_other = convert_other  # type: ignore[attr-defined]
    module.SMALL_TUNING = SMALL_TUNING  # type: ignore[attr-defined]
    sys.modules["measured_backends_impl"] = module
    reg = moe_oracle.registry(refresh=True)
    for rank, (name, cls, extra) in enumerate([
        ("tg_small", "Small", {"tuning": "measured_backends_impl:SMALL_TUNING"}),
        ("tg_big", "Big", {}),
        ("tg_other", "Other", {"converter": "measured_backends_impl:convert_other"}),
        ("tg_broken", "Broken", {}),
        ("tg_nan", "Nan", {}),
    ], start=1):
        reg.register(BackendSpec(name=name, experts=f"measured_backends_impl:{cls}", vendors=frozenset({"cpu"}),
                                 schemes=frozenset({"fp32"}), rank=rank, **extra), source="test")


def table_timer(candidate: Any, num_tokens: int, call: Any) -> float:
    """small: 1 ms to 16 tokens, 10 beyond (launch config "b" 10% faster); big: 5, then 2; other
    (another layout): 20, then 0.5 from 64 tokens; every real backend 100."""
    m = num_tokens
    label = candidate.label
    if label == "tg_small":
        return 1.0 if m <= 16 else 10.0
    if label == "tg_big":
        return 5.0 if m <= 16 else 2.0
    if label == "tg_other":
        return 20.0 if m < 64 else 0.5
    return 100.0


def launch_aware_timer(candidate: Any, num_tokens: int, call: Any) -> float:
    """``table_timer``, but tg_small's launch config "b" (read off its last forward) is 10% faster."""
    before = CALLS["tg_small[b]"]
    call()
    ms = table_timer(candidate, num_tokens, call)
    return ms * 0.9 if CALLS["tg_small[b]"] > before else ms

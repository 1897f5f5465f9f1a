"""How router logits become (top-k weights, top-k ids)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from moe_oracle.config.validate import boolean, finite_float, one_of, positive_int
from moe_oracle.errors import ConfigError

Scoring = Literal["softmax", "sigmoid"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingConfig:
    """Router of a layer.

    - ``scoring``: ``softmax`` over all experts, or ``sigmoid`` per expert.
    - ``renormalize``: rescale the chosen top-k weights to sum to one.
    - ``softmax_after_topk``: gpt-oss style, take the top-k logits, then softmax over them.
    - ``num_expert_groups`` / ``topk_groups``: DeepSeek grouped top-k (keep the best groups first).
    - ``score_correction_bias``: DeepSeek-V3 ``noaux_tc``; a per-expert bias added for *choosing*
      experts, not for weighting them (the tensor arrives with the weights).
    - ``routed_scaling_factor``: multiplies the final weights.
    """

    scoring: Scoring = "softmax"
    renormalize: bool = True
    softmax_after_topk: bool = False
    num_expert_groups: int | None = None
    topk_groups: int | None = None
    score_correction_bias: bool = False
    routed_scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        one_of("routing.scoring", self.scoring, ("softmax", "sigmoid"))
        for name in ("renormalize", "softmax_after_topk", "score_correction_bias"):
            boolean(f"routing.{name}", getattr(self, name))
        for name in ("num_expert_groups", "topk_groups"):
            if getattr(self, name) is not None:
                positive_int(f"routing.{name}", getattr(self, name))
        if self.num_expert_groups is None and self.topk_groups is not None:
            raise ConfigError("routing.num_expert_groups", "num_expert_groups and topk_groups must be given together")
        if self.num_expert_groups is not None and self.topk_groups is None:
            raise ConfigError("routing.topk_groups", "num_expert_groups and topk_groups must be given together")
        if self.num_expert_groups is not None and self.topk_groups is not None \
                and self.topk_groups > self.num_expert_groups:
            raise ConfigError("routing.topk_groups",
                              f"{self.topk_groups} exceeds num_expert_groups={self.num_expert_groups}")
        if self.softmax_after_topk and self.scoring != "softmax":
            raise ConfigError("routing.softmax_after_topk", "needs scoring='softmax'")
        finite_float("routing.routed_scaling_factor", self.routed_scaling_factor, positive=True)

    @property
    def grouped(self) -> bool:
        return self.num_expert_groups is not None

"""DeepSeek-V2/V3 and the families built on its router: Kimi K2, DeepSeek-V3.2, GLM-4.5 (``glm4_moe``,
``glm4_moe_lite``, the ``glm4v_moe_text`` of GLM-4.5V), dots.llm1.

Shared experts (``n_shared_experts`` dense MLPs of ``moe_intermediate_size`` each, added to the
routed output) and the first ``first_k_dense_replace`` dense layers are outside this layer:
``MoEConfig`` describes the routed experts of one MoE layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moe_oracle.config.hf.keys import EXPERTS_PER_TOK, Family, Json, flag, gated_hidden_act, number, optional_int
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.config.validate import positive_int, show
from moe_oracle.errors import ConfigError

_TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")


@dataclass(frozen=True)
class DeepSeekRouting:
    """DeepSeek router: ``scoring_func``, ``topk_method``, groups, scaling; defaults per model version.

    - ``greedy``: plain top-k (groups unused).
    - ``group_limited_greedy`` (V2): keep the ``topk_group`` best of ``n_group`` groups, then top-k.
    - ``noaux_tc`` (V3): grouped like V2 when ``n_group`` > 1, choosing with a per-expert
      score-correction bias.
    """

    defaults: Mapping[str, Any]

    def __call__(self, cfg: Json) -> RoutingConfig:
        get = lambda key: cfg[key] if cfg.get(key) is not None else self.defaults.get(key)
        scoring, method = get("scoring_func"), get("topk_method")
        if not isinstance(scoring, str) or scoring not in ("softmax", "sigmoid"):
            raise ConfigError("scoring_func", f"unsupported {show(scoring)}", allowed=("softmax", "sigmoid"))
        if not isinstance(method, str) or method not in _TOPK_METHODS:
            raise ConfigError("topk_method", f"unsupported {show(method)}", allowed=_TOPK_METHODS)
        for key in ("n_group", "topk_group"):
            if get(key) is not None:
                positive_int(key, get(key))
        groups = topk_groups = None
        if method != "greedy" and (get("n_group") or 1) > 1:
            groups, topk_groups = get("n_group"), get("topk_group")
            if topk_groups is None:
                raise ConfigError("topk_group", f"missing; topk_method {method!r} with n_group={groups} needs it")
        elif method == "group_limited_greedy":
            raise ConfigError("n_group", f"topk_method 'group_limited_greedy' needs n_group > 1, got {get('n_group')!r}")
        return RoutingConfig(
            scoring="sigmoid" if scoring == "sigmoid" else "softmax",  # checked above; the Literal for mypy
            renormalize=flag(cfg, "norm_topk_prob", self.defaults["norm_topk_prob"]),
            num_expert_groups=groups, topk_groups=topk_groups,
            score_correction_bias=method == "noaux_tc",
            routed_scaling_factor=number(cfg, "routed_scaling_factor", self.defaults["routed_scaling_factor"]),
        )


# Defaults of DeepSeek's own configuration classes, which the checkpoints' code loads.
DEEPSEEK_V2 = DeepSeekRouting({"scoring_func": "softmax", "topk_method": "greedy", "norm_topk_prob": False,
                               "routed_scaling_factor": 1.0, "n_group": None, "topk_group": None})
DEEPSEEK_V3 = DeepSeekRouting({"scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": True,
                               "routed_scaling_factor": 2.5, "n_group": 8, "topk_group": 4})



@dataclass(frozen=True)
class SigmoidBiasRouting:
    """The DeepSeek-V3 router as transformers writes it for GLM-4.5, dots.llm1 and DeepSeek-V3.2, with no
    ``scoring_func`` / ``topk_method`` keys read (their code has neither switch).

    Sigmoid scores; the choice adds the per-expert ``e_score_correction_bias`` the checkpoint
    always holds; grouped (a group scores the sum of its two best) when ``n_group`` > 1, keeping
    ``topk_group`` groups; ``norm_topk_prob`` renormalizes; ``routed_scaling_factor`` scales.
    The defaults are those of the family's transformers config class.
    """

    norm_topk_prob: bool
    routed_scaling_factor: float = 1.0
    n_group: int = 1
    topk_group: int = 1

    def __call__(self, cfg: Json) -> RoutingConfig:
        groups = optional_int(cfg, "n_group", self.n_group)
        topk_groups = optional_int(cfg, "topk_group", self.topk_group)
        assert groups is not None and topk_groups is not None
        if groups > 1 and topk_groups > groups:
            raise ConfigError("topk_group", f"{topk_groups} exceeds n_group={groups}")
        return RoutingConfig(
            scoring="sigmoid", renormalize=flag(cfg, "norm_topk_prob", self.norm_topk_prob),
            num_expert_groups=groups if groups > 1 else None, topk_groups=topk_groups if groups > 1 else None,
            score_correction_bias=True,
            routed_scaling_factor=number(cfg, "routed_scaling_factor", self.routed_scaling_factor),
        )


_DEEPSEEK_KEYS = (("n_routed_experts",), EXPERTS_PER_TOK, ("moe_intermediate_size",))
FAMILIES = (
    Family("deepseek_v2", *_DEEPSEEK_KEYS, DEEPSEEK_V2, gated_hidden_act),
    Family("deepseek_v3", *_DEEPSEEK_KEYS, DEEPSEEK_V3, gated_hidden_act),
    # Kimi K2 is the DeepSeek-V3 architecture under its own model_type.
    Family("kimi_k2", *_DEEPSEEK_KEYS, DEEPSEEK_V3, gated_hidden_act),
    Family("glm4_moe", *_DEEPSEEK_KEYS, SigmoidBiasRouting(norm_topk_prob=True), gated_hidden_act),
    Family("dots1", *_DEEPSEEK_KEYS, SigmoidBiasRouting(norm_topk_prob=False), gated_hidden_act),
    Family("glm4_moe_lite", *_DEEPSEEK_KEYS, SigmoidBiasRouting(norm_topk_prob=True, routed_scaling_factor=1.8),
           gated_hidden_act),
    Family("glm4v_moe_text", *_DEEPSEEK_KEYS, SigmoidBiasRouting(norm_topk_prob=True), gated_hidden_act),
    # DeepSeek-V3.2's sparse attention is attention; its MoE is V3's (transformers reads no scoring_func).
    Family("deepseek_v32", *_DEEPSEEK_KEYS,
           SigmoidBiasRouting(norm_topk_prob=True, routed_scaling_factor=2.5, n_group=8, topk_group=4),
           gated_hidden_act),
)

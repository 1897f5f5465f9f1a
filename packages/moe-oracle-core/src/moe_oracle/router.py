"""The router: router logits ``[T, E]`` -> (top-k weights ``[T, K]`` float32, top-k ids ``[T, K]`` int32).

T = tokens, E = experts (global), K = top-k, G = expert groups. Every mode of ``RoutingConfig``:

    scores  = softmax(logits) or sigmoid(logits)                          [T, E]  float32
    choice  = scores + score_correction_bias (if the config has one)      [T, E]  used only to choose
    grouped: group score = max of choice per group, or, with a bias, the sum of its top-2
             (DeepSeek-V3 ``noaux_tc``); experts outside the best ``topk_groups`` groups are out
    ids     = the K best experts by choice                                [T, K]
    weights = scores at ids (unbiased), renormalized to sum to one if ``renormalize``,
              or softmax over the chosen logits if ``softmax_after_topk`` (gpt-oss),
              times ``routed_scaling_factor``                             [T, K]

Everything is computed in float32, whatever the logits' dtype. Ties are broken deterministically:
among equal choice scores the lower expert id (and among equal group scores the lower group id)
wins, and the K slots are ordered by choice score, best first. ``torch.topk`` promises no order
among ties, so the selection uses a stable descending sort instead.

Value checks (finite logits and bias) follow DESIGN.md's ``check_values`` rule: on CPU tensors by
default, on accelerators only with ``check_values=True`` or ``MOE_ORACLE_CHECK_VALUES=1``, never
inside CUDA-graph capture or torch.compile. ``MoELayer`` validates once and calls ``_route`` directly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.errors import InputError
from moe_oracle.kernel.inputs import FLOAT_DTYPES, check_finite, check_values_default, should_check_values


class RouterOutput(NamedTuple):
    """``topk_weights`` ``[T, K]`` float32 and ``topk_ids`` ``[T, K]`` int32 global expert ids."""

    topk_weights: torch.Tensor
    topk_ids: torch.Tensor


def route(router_logits: torch.Tensor, config: MoEConfig | RoutingConfig, *, top_k: int | None = None,
          score_correction_bias: torch.Tensor | None = None, check_values: bool | None = None) -> RouterOutput:
    """Choose each token's experts and their weights as ``config``'s router does.

    Parameters
    ----------
    router_logits : torch.Tensor
        ``[T, E]`` float32/bf16/fp16, finite; E is ``config.num_experts`` for a ``MoEConfig``.
    config : MoEConfig or RoutingConfig
        A ``MoEConfig`` brings its routing, top-k and expert count; a bare ``RoutingConfig``
        needs ``top_k`` and takes E from the logits.
    top_k : int, optional
        Experts per token; only with a ``RoutingConfig``.
    score_correction_bias : torch.Tensor, optional
        ``[E]`` float, finite. Required when ``routing.score_correction_bias`` is set, refused
        otherwise (the scheme of the router is in the config, never inferred from what arrives).
    check_values : bool, optional
        Check that the logits and bias are finite: ``None`` (default) where it costs no device
        synchronization (CPU tensors) unless ``MOE_ORACLE_CHECK_VALUES`` says otherwise.

    Returns
    -------
    RouterOutput
        ``(topk_weights [T, K] float32, topk_ids [T, K] int32)``, new tensors on the logits' device.

    Raises
    ------
    InputError
        Wrong shape, dtype, or non-finite values in ``router_logits`` or the bias; a wrong ``top_k``.
    """
    routing, k, num_experts = _resolve(config, top_k)
    values = check_values_default(check_values)
    logits = _checked_logits(router_logits, num_experts, k, values)
    _check_groups(routing, logits.shape[1], k)
    bias = _checked_bias(score_correction_bias, routing, logits.shape[1], logits.device, values)
    return _route(logits, routing, k, bias)


class Router:
    """A layer's router: its ``MoEConfig`` and score-correction bias, bound once, called per forward."""

    def __init__(self, config: MoEConfig, score_correction_bias: torch.Tensor | None = None, *,
                 check_values: bool | None = None) -> None:
        if not isinstance(config, MoEConfig):
            raise InputError("config", "a MoEConfig", type(config).__name__)
        self.config = config
        self.check_values = check_values_default(check_values)
        # The bias is checked once, here, whatever its device (a synchronization at build time only).
        self.score_correction_bias = _checked_bias(score_correction_bias, config.routing, config.num_experts, None, True)

    def __call__(self, router_logits: torch.Tensor) -> RouterOutput:
        """``[T, E]`` logits -> ``(topk_weights [T, K] float32, topk_ids [T, K] int32)``."""
        logits = _checked_logits(router_logits, self.config.num_experts, self.config.top_k, self.check_values)
        bias = self.score_correction_bias
        if bias is not None and bias.device != logits.device:
            raise InputError("router_logits", f"device {bias.device} (where score_correction_bias is)",
                             f"device {logits.device}")
        return _route(logits, self.config.routing, self.config.top_k, bias)

    def __repr__(self) -> str:
        return f"Router(top_k={self.config.top_k}, num_experts={self.config.num_experts}, {self.config.routing!r})"


# The computation ------------------------------------------------------------------------------
def _route(logits: torch.Tensor, routing: RoutingConfig, k: int, bias: torch.Tensor | None) -> RouterOutput:
    logits = logits.float()                                                   # [T, E]
    scores = torch.softmax(logits, dim=-1) if routing.scoring == "softmax" else torch.sigmoid(logits)  # [T, E]
    choice = scores if bias is None else scores + bias                       # [T, E]
    if routing.grouped:
        assert routing.num_expert_groups is not None and routing.topk_groups is not None
        choice = _mask_to_best_groups(choice, routing.num_expert_groups, routing.topk_groups,
                                      sum_top2=bias is not None)
    ids = _stable_topk_indices(choice, k)                                     # [T, K] int64
    if routing.softmax_after_topk:
        weights = torch.softmax(logits.gather(1, ids), dim=-1)               # [T, K]
    else:
        weights = scores.gather(1, ids)                                       # [T, K]
        if routing.renormalize:
            # clamp: sigmoid scores of very negative logits underflow to 0; keep the division finite
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    if routing.routed_scaling_factor != 1.0:
        weights = weights * routing.routed_scaling_factor
    return RouterOutput(weights.contiguous(), ids.to(torch.int32).contiguous())


def _mask_to_best_groups(choice: torch.Tensor, num_groups: int, topk_groups: int, *, sum_top2: bool) -> torch.Tensor:
    """Set the choice scores of experts outside each token's ``topk_groups`` best groups to -inf.

    A group's score is its best expert's, or with a score-correction bias (DeepSeek-V3) the sum of
    its two best (one, if a group holds a single expert). Masked experts get -inf rather than
    DeepSeek's reference 0.0, so that a negative biased score in a kept group still beats them.
    """
    t, e = choice.shape
    per_group = choice.view(t, num_groups, e // num_groups)                  # [T, G, E/G]
    if sum_top2:
        best = torch.sort(per_group, dim=-1, descending=True).values          # [T, G, E/G]
        group_scores = best[..., : min(2, e // num_groups)].sum(dim=-1)       # [T, G]
    else:
        group_scores = per_group.max(dim=-1).values                           # [T, G]
    kept = _stable_topk_indices(group_scores, topk_groups)                    # [T, topk_groups]
    keep = torch.zeros(t, num_groups, dtype=torch.bool, device=choice.device)
    keep.scatter_(1, kept, True)                                              # [T, G]
    keep = keep.repeat_interleave(e // num_groups, dim=1)                     # [T, E]
    return choice.masked_fill(~keep, float("-inf"))


def _stable_topk_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values per row, best first; equal values keep index order."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices[:, :k]


# Validation -----------------------------------------------------------------------------------
def _resolve(config: MoEConfig | RoutingConfig, top_k: int | None) -> tuple[RoutingConfig, int, int | None]:
    if isinstance(config, MoEConfig):
        if top_k is not None and top_k != config.top_k:
            raise InputError("top_k", f"None or config.top_k={config.top_k} (a MoEConfig carries top_k)", top_k)
        return config.routing, config.top_k, config.num_experts
    if isinstance(config, RoutingConfig):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise InputError("top_k", "a positive int (a RoutingConfig does not carry top_k)", repr(top_k))
        return config, top_k, None
    raise InputError("config", "a MoEConfig or RoutingConfig", type(config).__name__)


def _checked_logits(router_logits: object, num_experts: int | None, k: int,
                    check_values: bool | None) -> torch.Tensor:
    if not isinstance(router_logits, torch.Tensor):
        raise InputError("router_logits", "a torch.Tensor", type(router_logits).__name__)
    e = "E" if num_experts is None else str(num_experts)
    if router_logits.dim() != 2 or (num_experts is not None and router_logits.shape[1] != num_experts):
        raise InputError("router_logits", f"shape [T, {e}]", f"shape {list(router_logits.shape)}")
    if router_logits.dtype not in FLOAT_DTYPES:
        raise InputError("router_logits", "dtype float32/bfloat16/float16",
                         f"dtype {str(router_logits.dtype).removeprefix('torch.')}")
    if k > router_logits.shape[1]:
        raise InputError("top_k", f"at most the {router_logits.shape[1]} experts of router_logits", k)
    if should_check_values(check_values, router_logits):
        check_finite("router_logits", router_logits)
    return router_logits


def _check_groups(routing: RoutingConfig, num_experts: int, k: int) -> None:
    """What ``MoEConfig`` checks on construction, for the bare ``RoutingConfig`` path."""
    groups, kept = routing.num_expert_groups, routing.topk_groups
    if groups is None or kept is None:
        return
    if num_experts % groups:
        raise InputError("router_logits", f"an expert count divisible into {groups} groups", f"{num_experts} experts")
    if kept * (num_experts // groups) < k:
        raise InputError("top_k", f"at most the {kept * (num_experts // groups)} experts of {kept} kept groups", k)


def _checked_bias(bias: object, routing: RoutingConfig, num_experts: int,
                  device: torch.device | None, check_values: bool | None) -> torch.Tensor | None:
    if bias is None:
        if routing.score_correction_bias:
            raise InputError("score_correction_bias", f"a [{num_experts}] tensor (routing.score_correction_bias "
                             "is set)", "None")
        return None
    if not routing.score_correction_bias:
        raise InputError("score_correction_bias", "None (routing.score_correction_bias is not set)", "a tensor")
    if not isinstance(bias, torch.Tensor):
        raise InputError("score_correction_bias", f"a [{num_experts}] tensor", type(bias).__name__)
    if tuple(bias.shape) != (num_experts,):
        raise InputError("score_correction_bias", f"shape [{num_experts}]", f"shape {list(bias.shape)}")
    if bias.dtype not in FLOAT_DTYPES:
        raise InputError("score_correction_bias", "dtype float32/bfloat16/float16",
                         f"dtype {str(bias.dtype).removeprefix('torch.')}")
    if device is not None and bias.device != device:
        raise InputError("score_correction_bias", f"device {device} (where router_logits is)", f"device {bias.device}")
    if should_check_values(check_values, bias):
        check_finite("score_correction_bias", bias)
    return bias.float()

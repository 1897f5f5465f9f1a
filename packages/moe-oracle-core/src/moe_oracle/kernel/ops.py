"""``MoELayer``'s kernels as torch custom ops, so ``torch.compile(fullgraph=True)`` can trace a model
that calls a layer: the ops are opaque to the compiler, and their fake (meta) implementations give
the output's shape, dtype and device without running anything.

    moe_oracle::moe_forward(hidden [T, H], router_logits [T, E], layer_id) -> [T, H]
    moe_oracle::moe_forward_routed(hidden [T, H], topk_weights [T, K], topk_ids [T, K], layer_id) -> [T, H]

``layer_id`` names a live ``MoELayer`` (``register`` gives each layer one at construction; the table
holds layers weakly). The layer validates its inputs before it calls an op (the checks are plain
metadata comparisons the compiler folds); the op runs the layer's validated path, whose output is
always a new tensor. Eager forwards call that path directly: an op call would only add dispatch cost.
"""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from moe_oracle.layer import MoELayer

_LAYERS: weakref.WeakValueDictionary[int, MoELayer] = weakref.WeakValueDictionary()
_ids = itertools.count(1)


def register(layer: MoELayer) -> int:
    """A new id for ``layer``, valid while the layer lives."""
    layer_id = next(_ids)
    _LAYERS[layer_id] = layer
    return layer_id


def layer_for(layer_id: int) -> MoELayer:
    try:
        return _LAYERS[layer_id]
    except KeyError:
        raise RuntimeError(f"moe_oracle custom op: no live MoELayer has id {layer_id} (was it garbage-collected?)") from None


@torch.library.custom_op("moe_oracle::moe_forward", mutates_args=())
def moe_forward(hidden_states: torch.Tensor, router_logits: torch.Tensor, layer_id: int) -> torch.Tensor:
    return layer_for(layer_id)._forward_logits(hidden_states, router_logits)


@moe_forward.register_fake
def _moe_forward_fake(hidden_states: torch.Tensor, router_logits: torch.Tensor, layer_id: int) -> torch.Tensor:
    return torch.empty_like(hidden_states)


@torch.library.custom_op("moe_oracle::moe_forward_routed", mutates_args=())
def moe_forward_routed(hidden_states: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                       layer_id: int) -> torch.Tensor:
    return layer_for(layer_id)._forward_routed(hidden_states, topk_weights, topk_ids)


@moe_forward_routed.register_fake
def _moe_forward_routed_fake(hidden_states: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                             layer_id: int) -> torch.Tensor:
    return torch.empty_like(hidden_states)

"""How our activations map onto FlashInfer's: the ``ActivationType`` member and its SwiGLU tensors.

Gated activations run FlashInfer's SwiGLU. With per-expert ``alpha``, ``beta`` and ``limit``
(float32 ``[E]``) it computes ``min(g, limit) * sigmoid(alpha * min(g, limit)) *
(clamp(u, -limit, limit) + beta)``: gpt-oss's ``swigluoai`` is ``alpha = swiglu_alpha, beta = 1``;
``silu`` with a ``swiglu_limit`` is ``alpha = 1, beta = 0``; plain ``silu`` passes no tensors.
``relu2`` is the non-gated ``Relu2`` (``relu(h) ** 2``).
"""

from __future__ import annotations

import torch

from moe_oracle.plugin import MoEConfig


def activation_type(config: MoEConfig) -> str:
    """The FlashInfer ``ActivationType`` member name for ``config.activation``."""
    names = {"silu": "Swiglu", "swigluoai": "Swiglu", "relu2": "Relu2"}
    if config.activation not in names or (config.activation == "silu" and not config.is_gated):
        raise ValueError(f"activation: FlashInfer kernels run gated silu/swigluoai or relu2, got "
                         f"{config.activation} ({'gated' if config.is_gated else 'not gated'})")
    return names[config.activation]


def swiglu_tensors(config: MoEConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """``swiglu_alpha``/``swiglu_beta``/``swiglu_limit`` float32 ``[E]``, or ``{}`` for plain SwiGLU."""
    if config.activation == "swigluoai":
        assert config.swiglu_alpha is not None and config.swiglu_limit is not None  # MoEConfig defaults them
        alpha, beta, limit = config.swiglu_alpha, 1.0, config.swiglu_limit
    elif config.swiglu_limit is not None:
        alpha, beta, limit = 1.0, 0.0, config.swiglu_limit
    else:
        return {}
    e = config.num_local_experts
    return {name: torch.full((e,), value, dtype=torch.float32, device=device)
            for name, value in (("swiglu_alpha", alpha), ("swiglu_beta", beta), ("swiglu_limit", limit))}

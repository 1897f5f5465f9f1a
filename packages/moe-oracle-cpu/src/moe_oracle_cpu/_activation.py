"""The activation between the two GEMMs, applied in place on the GEMM1 output where torch allows.

The formulas are the reference's (``moe_oracle.backends.reference.experts``): gated activations
split ``h`` ``[M, N]`` into ``gate, up = h[:, :I], h[:, I:]``; ``swiglu_limit`` clamps gate from
above and up on both sides; ``swigluoai`` is gpt-oss's ``(up + 1) * gate * sigmoid(alpha * gate)``;
``gelu`` is the exact erf GELU; ``relu2`` is ``relu(h) ** 2``. Computing in place keeps the
intermediate at one ``[M, N]`` buffer: the result is a ``[M, I]`` view of it (row stride N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moe_oracle.plugin import MoEConfig


def activate_(config: MoEConfig, h: torch.Tensor) -> torch.Tensor:
    """Overwrite ``h`` ``[M, N]`` with the activation and return the ``[M, I]`` result (a view of ``h``)."""
    if not config.is_gated:
        if config.activation == "relu2":
            return torch.relu_(h).square_()
        if config.activation == "silu":
            return F.silu(h, inplace=True)
        return h.copy_(F.gelu(h, approximate="none"))
    i = config.intermediate_size_per_partition
    gate, up = h[:, :i], h[:, i:]                                              # [M, I] views of h
    limit = config.swiglu_limit
    if limit is not None:
        gate.clamp_(max=limit)
        up.clamp_(min=-limit, max=limit)
    if config.activation == "swigluoai":
        assert config.swiglu_alpha is not None  # defaulted by MoEConfig
        glu = torch.sigmoid(gate * config.swiglu_alpha)                        # [M, I]
        return gate.mul_(glu).mul_(up.add_(1.0))
    if config.activation == "silu":
        return F.silu(gate, inplace=True).mul_(up)
    return gate.copy_(F.gelu(gate, approximate="none")).mul_(up)

"""One expert's weight at a time, in the compute dtype: plain, upcast, or dequantized per tile.

Quantized schemes are served by dequantizing one expert's ``[N, K]`` tile inside the expert loop
(``moe_oracle.quant.dequantize_weights`` on a ``[1, N, K]`` slice), so at most one expert's
float weights exist at a time, never all of them.
"""

from __future__ import annotations

import torch

from moe_oracle.plugin import MoEConfig, QuantDesc


def compute_dtype(config: MoEConfig, features: frozenset[str]) -> torch.dtype:
    """The dtype the GEMMs run in. fp16 runs in fp32, because torch's CPU fp16 GEMM takes a slow
    scalar path without AVX512-FP16 (measured 0.4 GFLOP/s for fp16 against 158 for fp32 on this
    project's AMD Zen 4 machine, for a 2048^3 ``torch.mm``); so does bf16 where oneDNN has no bf16
    GEMMs (``onednn_bf16`` missing: 0.9 GFLOP/s against 149 for fp32 on an AVX2-only Zen 3)."""
    if config.dtype == torch.float16 or (config.dtype == torch.bfloat16 and "onednn_bf16" not in features):
        return torch.float32
    return config.dtype


class ExpertWeights:
    """The ``w13`` ``[E_l, N, H]`` or ``w2`` ``[E_l, H, I]`` of every local expert, handed out one
    expert at a time as ``[N, K]`` in the compute dtype (``__getitem__``)."""

    def __init__(self, config: MoEConfig, data: torch.Tensor, desc: QuantDesc, dtype: torch.dtype) -> None:
        self.config = config
        self.data = data
        self.desc = desc
        self.dtype = dtype

    def __getitem__(self, e: int) -> torch.Tensor:
        scheme = self.config.scheme
        if scheme.weight is None:
            return self.data[e] if self.data.dtype == self.dtype else self.data[e].to(self.dtype)
        from moe_oracle.plugin import dequantize_weights

        def one(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[e:e + 1]

        w = dequantize_weights(scheme, self.data[e:e + 1], scale=one(self.desc.scale),
                               zero_point=one(self.desc.zero_point), global_scale=one(self.desc.global_scale))
        return w[0].to(self.dtype)                                             # [N, K]


def bias_in(dtype: torch.dtype, bias: torch.Tensor | None) -> torch.Tensor | None:
    """A bias ``[E_l, N]`` in the compute dtype (biases may arrive in float32 or the model dtype)."""
    return None if bias is None else bias.to(dtype)

"""gpt-oss experts as ``transformers`` stores them -> canonical weights for ``MoELayer.load_weights``.

Shape letters: E experts, H hidden size (2880), I intermediate size (2880), G = H/32 (or I/32)
mxfp4 scale groups. ``transformers``' ``GptOssExperts`` (and the published checkpoints) store:

| tensor | shape | layout |
|---|---|---|
| ``gate_up_proj_blocks`` | ``[E, 2I, G, 16]`` uint8 | e2m1 two a byte, low nibble = even element; rows **interleaved** (1) |
| ``gate_up_proj_scales`` | ``[E, 2I, G]`` uint8 | e8m0, rows interleaved alike |
| ``gate_up_proj_bias`` | ``[E, 2I]`` | interleaved alike |
| ``down_proj_blocks`` / ``_scales`` / ``_bias`` | ``[E, H, I/32, 16]`` / ``[E, H, I/32]`` / ``[E, H]`` | not interleaved |
| ``gate_up_proj`` (dequantized model) | ``[E, H, 2I]`` | **transposed** (input first), columns interleaved |
| ``down_proj`` (dequantized model) | ``[E, I, H]`` | transposed |

(1) row ``2j`` is gate row j, row ``2j+1`` up row j (transformers: ``gate, up = x[..., ::2], x[..., 1::2]``).

Canonical (DESIGN.md): ``w13`` ``[E, 2I, H/2]`` uint8 (gate rows first, then up), ``w13_scale``
``[E, 2I, H/32]``, ``w13_bias`` ``[E, 2I]``; ``w2`` ``[E, H, I/2]``, ``w2_scale``, ``w2_bias``; for the
dequantized model ``w13`` ``[E, 2I, H]`` and ``w2`` ``[E, H, I]`` in its dtype. The transform is a
row permutation (and, dequantized, a transpose); ``canonical_to_gpt_oss`` is its exact inverse. The
layer is ``MoEConfig.preset("gpt-oss-20b")`` (swigluoai, alpha 1.702, limit 7.0, biases).
"""

from __future__ import annotations

import torch


def _deinterleave(t: torch.Tensor) -> torch.Tensor:
    """Rows (dim 1) ``g0 u0 g1 u1 ...`` -> ``g0 g1 ... u0 u1 ...``."""
    return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1).contiguous()


def _interleave(t: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_deinterleave``."""
    n = t.shape[1] // 2
    out = torch.empty_like(t)
    out[:, 0::2], out[:, 1::2] = t[:, :n], t[:, n:]
    return out


def gpt_oss_to_canonical(*, gate_up_proj_bias: torch.Tensor, down_proj_bias: torch.Tensor,
                         gate_up_proj_blocks: torch.Tensor | None = None,
                         gate_up_proj_scales: torch.Tensor | None = None,
                         down_proj_blocks: torch.Tensor | None = None, down_proj_scales: torch.Tensor | None = None,
                         gate_up_proj: torch.Tensor | None = None,
                         down_proj: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One layer's expert tensors, named as ``transformers`` names them (``model.layers.N.mlp.experts.*``),
    to the keyword arguments of ``MoELayer.load_weights``. Give either the mxfp4 ``*_blocks`` and
    ``*_scales`` (checkpoint as published; quant ``mxfp4``) or the dequantized ``gate_up_proj`` /
    ``down_proj`` (quant ``bf16``). Inputs are not modified; the outputs are new contiguous tensors."""
    out = {"w13_bias": _deinterleave(gate_up_proj_bias), "w2_bias": down_proj_bias.contiguous()}
    if gate_up_proj_blocks is not None:
        if gate_up_proj_scales is None or down_proj_blocks is None or down_proj_scales is None:
            raise ValueError("gpt_oss_to_canonical: mxfp4 needs gate_up_proj_blocks/_scales and down_proj_blocks/_scales")
        e, n = gate_up_proj_blocks.shape[:2]
        out["w13"] = _deinterleave(gate_up_proj_blocks.reshape(e, n, -1))            # [E, 2I, H/2]
        out["w13_scale"] = _deinterleave(gate_up_proj_scales)                          # [E, 2I, H/32]
        e, h = down_proj_blocks.shape[:2]
        out["w2"] = down_proj_blocks.reshape(e, h, -1).contiguous()                    # [E, H, I/2]
        out["w2_scale"] = down_proj_scales.contiguous()                                # [E, H, I/32]
    elif gate_up_proj is not None and down_proj is not None:
        out["w13"] = _deinterleave(gate_up_proj.transpose(1, 2))                       # [E, 2I, H]
        out["w2"] = down_proj.transpose(1, 2).contiguous()                             # [E, H, I]
    else:
        raise ValueError("gpt_oss_to_canonical: give the mxfp4 *_blocks/*_scales or gate_up_proj and down_proj")
    return out


def canonical_to_gpt_oss(*, w13: torch.Tensor, w2: torch.Tensor, w13_bias: torch.Tensor, w2_bias: torch.Tensor,
                         w13_scale: torch.Tensor | None = None,
                         w2_scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Exact inverse of ``gpt_oss_to_canonical``: canonical tensors back to ``transformers``' names."""
    out = {"gate_up_proj_bias": _interleave(w13_bias), "down_proj_bias": w2_bias.clone()}
    if w13_scale is not None and w2_scale is not None:
        e, n, hb = w13.shape
        out["gate_up_proj_blocks"] = _interleave(w13).reshape(e, n, hb // 16, 16)
        out["gate_up_proj_scales"] = _interleave(w13_scale)
        e, h, ib = w2.shape
        out["down_proj_blocks"] = w2.reshape(e, h, ib // 16, 16).clone()
        out["down_proj_scales"] = w2_scale.clone()
    else:
        out["gate_up_proj"] = _interleave(w13).transpose(1, 2).contiguous()
        out["down_proj"] = w2.transpose(1, 2).contiguous()
    return out

"""gpt-oss tensors as transformers stores them -> canonical: exact round trip, and the layer computes
what transformers' ``GptOssExperts`` computes on the same tensors (restated below from its forward)."""

from __future__ import annotations

import torch

from moe_oracle import MoEConfig
from moe_oracle.checkpoint import canonical_to_gpt_oss, gpt_oss_to_canonical
from moe_oracle.quant import dequantize_weights
from moe_oracle.router import route
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe

CONFIG = MoEConfig.preset("gpt-oss-20b", num_experts=4, hidden_size=64, intermediate_size=96, dtype=torch.float32)


def _hf_experts_forward(hf: dict[str, torch.Tensor], x: torch.Tensor, topk_weights: torch.Tensor,
                        topk_ids: torch.Tensor) -> torch.Tensor:
    """transformers' GptOssExperts on its own (dequantized) layout: interleaved, transposed."""
    alpha, limit = 1.702, 7.0
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for w, e in zip(topk_weights[t].tolist(), topk_ids[t].tolist(), strict=True):
            gate_up = x[t] @ hf["gate_up_proj"][e] + hf["gate_up_proj_bias"][e]     # [2I]
            gate, up = gate_up[::2].clamp(max=limit), gate_up[1::2].clamp(-limit, limit)
            glu = gate * torch.sigmoid(gate * alpha)
            out[t] += w * (((up + 1) * glu) @ hf["down_proj"][e] + hf["down_proj_bias"][e])
    return out


def test_mxfp4_round_trip_is_exact() -> None:
    w = random_weights(CONFIG, seed=0)
    canonical = {k: v for k, v in w.items()}
    hf = canonical_to_gpt_oss(**canonical)
    assert hf["gate_up_proj_blocks"].shape == (4, 192, 2, 16) and hf["down_proj_scales"].shape == (4, 64, 3)
    back = gpt_oss_to_canonical(**hf)
    assert set(back) == set(canonical)
    for name, t in canonical.items():
        assert torch.equal(back[name], t), name


def test_layer_matches_transformers_forward() -> None:
    w = random_weights(CONFIG, seed=1)
    hf_q = canonical_to_gpt_oss(**dict(w.items()))
    # The dequantized model's tensors, from the mxfp4 checkpoint: transformers' own layout.
    dense = {name: dequantize_weights("mxfp4", w.w13 if name == "w13" else w.w2,
                                      scale=w.w13_scale if name == "w13" else w.w2_scale) for name in ("w13", "w2")}
    hf = canonical_to_gpt_oss(w13=dense["w13"], w2=dense["w2"], w13_bias=w.w13_bias.float(),
                              w2_bias=w.w2_bias.float())
    assert torch.equal(gpt_oss_to_canonical(**hf)["w13"], dense["w13"])
    hidden, logits = random_inputs(CONFIG, 5, seed=2)
    topk_weights, topk_ids = route(logits, CONFIG)
    from moe_oracle.kernel.weights import CanonicalWeights

    ours = reference_moe(CONFIG, CanonicalWeights(**gpt_oss_to_canonical(**hf_q)), hidden, topk_weights, topk_ids)
    theirs = _hf_experts_forward(hf, hidden, topk_weights, topk_ids)
    assert_close(ours, theirs, config=CONFIG, name="gpt-oss canonical vs transformers layout")

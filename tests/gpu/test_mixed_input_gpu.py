"""The mixed-input Triton GEMM (issue 17) on a CUDA GPU: every new scheme against the reference at
small shapes in bf16 and fp16 (the interpreter cannot check bf16), schemes served at a higher
activation precision, fp8 weights without fp8 MMA, CUDA-graph capture, and the gpt-oss-20b and
gpt-oss-120b preset layers end to end through ``MoELayer``. Skipped without CUDA.

    PYTHONPATH=... python -m pytest -q tests/gpu/test_mixed_input_gpu.py
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
pytest.importorskip("triton")

import moe_oracle  # noqa: E402
from moe_oracle import MoEConfig, MoELayer, oracle_for  # noqa: E402
from moe_oracle.kernel.weights import CanonicalWeights, canonical_kernel_weights  # noqa: E402
from moe_oracle.router import route  # noqa: E402
from moe_oracle.testing import (  # noqa: E402
    assert_close,
    assert_graph_replay_equals_eager,
    random_inputs,
    random_weights,
    reference_moe,
    served_reference_moe,
)

DEV = "cuda"
MIXED = ("mxfp4", "mxfp4_a8", "nvfp4", "w4a8_int8", "w4a8_fp8", "int4_w4a16", "int4_w4a16_g32_zp",
         "int8_w8a16_group", "int8_w8a16_group_g64_zp", "int8_w8a16")


def _experts(config: MoEConfig, weights: CanonicalWeights):
    from moe_oracle.triton.experts import TritonExperts

    kw = canonical_kernel_weights(weights, config, backend="triton")
    return TritonExperts(config, oracle_for(config).make_quant_config(config, kw), kw)


def _check(config: MoEConfig, tokens: int, *, seed: int = 0) -> None:
    weights = random_weights(config, seed=seed, device=DEV)
    hidden, logits = random_inputs(config, tokens, seed=seed + 1, device=DEV)
    topk_weights, topk_ids = route(logits, config)
    experts = _experts(config, weights)
    served = experts.plan.served or config.scheme.name
    expected, tol_config = served_reference_moe(config, served, weights, hidden, topk_weights, topk_ids)
    out = experts.apply(hidden, topk_weights, topk_ids)
    assert_close(out, expected, config=tol_config, name=f"triton {config.scheme.name} (as {served}) T={tokens}")


@pytest.mark.parametrize("tokens", [1, 7, 64, 300])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quant", MIXED)
def test_mixed_input_scheme_matches_reference(quant: str, dtype: torch.dtype, tokens: int) -> None:
    _check(MoEConfig(num_experts=16, top_k=4, hidden_size=1024, intermediate_size=768, dtype=dtype, quant=quant),
           tokens)


@pytest.mark.parametrize("tokens", [1, 64, 300])
@pytest.mark.parametrize("quant", ["fp8_tensor", "fp8_tensor_static", "fp8_channel", "fp8_block"])
def test_fp8_weights_without_fp8_mma(quant: str, tokens: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an Ampere GPU runs (e4m3 weights decoded in registers, bf16 activations), forced here."""
    from moe_oracle.triton import experts as experts_module

    monkeypatch.setattr(experts_module, "fp8_mma_supported", lambda device: False)
    _check(MoEConfig(num_experts=16, top_k=4, hidden_size=1024, intermediate_size=768, quant=quant), tokens)


def test_partial_k_tiles_and_odd_sizes() -> None:
    """H = I = 2880 (gpt-oss): 2880 is not a multiple of 128, so K tiles are masked."""
    _check(MoEConfig(num_experts=8, top_k=2, hidden_size=2880, intermediate_size=2880, quant="mxfp4",
                     activation="swigluoai", has_bias=True), 37)


def _gpt_oss_weights(config: MoEConfig, *, seed: int) -> CanonicalWeights:
    """mxfp4 weights made and quantized on the GPU, 8 experts at a time (120b's 128 would be slow on CPU)."""
    from moe_oracle.quant import quantize_weights

    g = torch.Generator(device=DEV).manual_seed(seed)
    e, n, h, i = config.num_experts, config.w13_rows, config.hidden_size, config.intermediate_size
    out: dict[str, torch.Tensor] = {}
    for name, shape in (("w13", (n, h)), ("w2", (h, i))):
        data, scale = [], []
        for e0 in range(0, e, 8):
            w = torch.randn(min(8, e - e0), *shape, generator=g, device=DEV) / math.sqrt(shape[1])
            q = quantize_weights(config.scheme, w)
            data.append(q.data)
            scale.append(q.scale)
        out[name], out[f"{name}_scale"] = torch.cat(data), torch.cat(scale)
    out["w13_bias"] = (torch.randn(e, n, generator=g, device=DEV) * 0.5).to(config.dtype)
    out["w2_bias"] = (torch.randn(e, h, generator=g, device=DEV) * 0.5).to(config.dtype)
    return CanonicalWeights(**out)


@pytest.mark.parametrize("tokens", [1, 4, 64, 257])
@pytest.mark.parametrize("preset", ["gpt-oss-20b", "gpt-oss-120b"])
def test_gpt_oss_preset_layer_matches_reference(preset: str, tokens: int) -> None:
    """The whole layer (router, mxfp4 experts with biases, swigluoai alpha 1.702 limit 7) through
    MoELayer as selected on this GPU, against the reference layer on the same weights."""
    config = MoEConfig.preset(preset)
    layer = MoELayer(config, strict=True)
    assert layer.selection.served_scheme == "mxfp4"
    weights = _gpt_oss_weights(config, seed=0)
    layer.load_weights(**dict(weights.items()))
    reference = MoELayer(config, backend="reference")
    reference.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, tokens, seed=1, device=DEV)
    assert_close(layer(hidden, logits), reference(hidden, logits), config=config,
                 name=f"{preset} on {layer.selection.backend} T={tokens}")


def test_selection_on_this_gpu_never_falls_to_the_reference() -> None:
    for quant in ("mxfp4", "mxfp4_a8", "nvfp4", "w4a8_int8", "int4_w4a16", "int8_w8a16", "fp8_block"):
        config = MoEConfig.preset("qwen3-30b-a3b", quant=quant)
        selection = moe_oracle.select(config, strict=True)
        assert selection.backend != "reference", str(selection.report)


@pytest.mark.parametrize("quant", ["mxfp4", "nvfp4", "int4_w4a16"])
@pytest.mark.parametrize("tokens", [4, 600])
def test_cuda_graph_capture_and_replay(quant: str, tokens: int) -> None:
    config = MoEConfig(num_experts=32, top_k=4, hidden_size=1024, intermediate_size=512, quant=quant)
    experts = _experts(config, random_weights(config, seed=4, device=DEV))
    hidden, logits = random_inputs(config, tokens, seed=5, device=DEV)
    topk_weights, topk_ids = route(logits, config)
    new_hidden, new_logits = random_inputs(config, tokens, seed=6, device=DEV)
    new_weights, new_ids = route(new_logits, config)
    assert_graph_replay_equals_eager(experts.apply, (hidden, topk_weights, topk_ids), (new_hidden, new_weights, new_ids))


def test_reference_helper_is_exact_for_exact_schemes() -> None:
    """``served_reference_moe`` with the config's own scheme is the reference itself."""
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=128, quant="int4_w4a16")
    w = random_weights(config, seed=7, device=DEV)
    hidden, logits = random_inputs(config, 5, seed=8, device=DEV)
    tw, ti = route(logits, config)
    served, _ = served_reference_moe(config, "int4_w4a16", w, hidden, tw, ti)
    assert torch.equal(served, reference_moe(config, w, hidden, tw, ti))

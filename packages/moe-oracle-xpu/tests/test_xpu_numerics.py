"""vllm-xpu-kernels and IPEX against the reference on a real Intel GPU (``nox -s test-xpu``); skipped
everywhere else. Never run yet: no Intel GPU was available while this package was written."""

from __future__ import annotations

import types
from typing import Any

import pytest

from moe_oracle import MoEConfig, MoELayer, Platform
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe, route, tolerance

pytestmark = pytest.mark.gpu

XPU_CASES = [
    ("bf16", {}), ("fp16", {"dtype": "fp16", "activation": "gelu"}), ("bf16", {"activation": "relu2"}),
    ("bf16", {"activation": "swigluoai", "has_bias": True}), ("fp8_tensor", {}), ("mxfp8", {}),
    ("mxfp4", {"activation": "swigluoai", "has_bias": True}), ("int4_w4a16", {}),
]


@pytest.mark.parametrize(("scheme", "overrides"), XPU_CASES)
@pytest.mark.parametrize("tokens", [1, 33, 300])
def test_xpu_matches_reference(scheme: str, overrides: dict[str, Any], tokens: int,
                               real_xpu_kernels: types.ModuleType) -> None:
    config = MoEConfig(**{"num_experts": 8, "top_k": 2, "hidden_size": 512, "intermediate_size": 256,
                          "quant": scheme, **overrides})
    weights = random_weights(config, seed=0).to("xpu")
    layer = MoELayer(config, backend="xpu", platform=Platform.detect())
    layer.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, num_tokens=tokens, seed=1, device="xpu")
    out = layer(hidden, logits)
    topk_weights, topk_ids = route(logits, config)
    want = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    # The library runs fp8/mxfp8 with unquantized activations (more exact than the reference's
    # quantized ones): the scheme's own row of the shared table covers the difference.
    assert_close(out, want, tol=tolerance(config.dtype, scheme), name=f"xpu {scheme} T={tokens}")


@pytest.mark.parametrize("tokens", [1, 33, 300])
def test_ipex_matches_reference(tokens: int, real_ipex: types.ModuleType) -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=512, intermediate_size=256)
    weights = random_weights(config, seed=0).to("xpu")
    layer = MoELayer(config, backend="xpu_ipex", platform=Platform.detect())
    layer.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, num_tokens=tokens, seed=1, device="xpu")
    topk_weights, topk_ids = route(logits, config)
    want = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    assert_close(layer(hidden, logits), want, config=config, name=f"xpu_ipex T={tokens}")

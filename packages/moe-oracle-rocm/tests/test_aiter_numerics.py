"""AITER against the reference on a real AMD GPU (``nox -s test-rocm``); skipped everywhere else.

Never run yet: no AMD GPU was available while this package was written (see README.md).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest
import torch

from moe_oracle import MoEConfig, MoELayer, Platform, explain
from moe_oracle.plugin import CanonicalWeights
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe, route, tolerance

pytestmark = pytest.mark.gpu

# (scheme, MoEConfig overrides); archs that lack a scheme's kernels skip it through selection.
CASES = [
    ("bf16", {}), ("fp16", {"dtype": "fp16"}), ("bf16", {"activation": "gelu"}),
    ("fp8_tensor", {}), ("fp8_tensor_static", {}), ("fp8_channel", {}), ("fp8_block", {}),
    ("w4a8_fp8", {"activation": "gelu"}),
    ("mxfp4", {"activation": "swigluoai"}),
    ("mxfp4", {"activation": "swigluoai", "has_bias": True, "hidden_size": 720, "intermediate_size": 720}),
    ("mxfp4_a8", {"activation": "swigluoai"}),
]


@pytest.mark.parametrize(("scheme", "overrides"), CASES)
@pytest.mark.parametrize("tokens", [1, 33, 300])
def test_aiter_matches_reference(scheme: str, overrides: dict[str, Any], tokens: int,
                                 real_aiter: types.ModuleType, w4a8_weights: Callable[..., CanonicalWeights]) -> None:
    platform = Platform.detect()
    config = MoEConfig(**{"num_experts": 8, "top_k": 2, "hidden_size": 512, "intermediate_size": 256,
                          "quant": scheme, **overrides})
    report = explain(config, platform)
    if report.candidate("aiter").status not in ("selected", "usable"):
        pytest.skip(f"aiter does not serve {scheme} here: {report.candidate('aiter').reason}")
    weights = (w4a8_weights(config, 0) if scheme == "w4a8_fp8" else random_weights(config, seed=0)).to("cuda")
    layer = MoELayer(config, backend="aiter", platform=platform)
    layer.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, num_tokens=tokens, seed=1, device="cuda")
    out = layer(hidden, logits)
    topk_weights, topk_ids = route(logits, config)
    want = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    # AITER picks the mxfp4 path's activation precision itself (bf16, fp8 or fp4 by token count,
    # arch and version): compare those with the fp4-activation row of the shared table.
    tol = tolerance(config.dtype, "nvfp4") if scheme.startswith("mxfp4") else tolerance(config.dtype, scheme)
    assert_close(out, want, tol=tol, name=f"aiter {scheme} T={tokens}")
    torch.cuda.synchronize()

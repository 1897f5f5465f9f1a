"""FlashInfer experts on a real GPU against the reference (skipped without CUDA and flashinfer).

The first call JIT-compiles FlashInfer's CUTLASS MoE module for the device (on Hopper about 240
CUTLASS translation units: tens of minutes on 16 cores); build it ahead of the test with
``python -c "from flashinfer.fused_moe.core import get_cutlass_fused_moe_module as m; m('90')"``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("flashinfer") is None, reason="flashinfer not installed"),
]

from moe_oracle import MoEConfig, oracle_for  # noqa: E402
from moe_oracle.testing import (  # noqa: E402
    assert_close,
    random_inputs,
    random_weights,
    reference_moe,
    route,
)
from moe_oracle_cuda.flashinfer_cutlass.converter import convert  # noqa: E402
from moe_oracle_cuda.flashinfer_cutlass.experts import FlashInferCutlassExperts  # noqa: E402

DEV = "cuda"


def _capability() -> tuple[int, int]:
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)


@pytest.mark.parametrize("tokens", [1, 33, 256])
@pytest.mark.parametrize("quant", ["bf16", "fp8_block"])
def test_cutlass_matches_reference(quant: str, tokens: int) -> None:
    cap = _capability()
    if quant == "fp8_block" and cap != (9, 0):
        pytest.skip(f"FlashInfer CUTLASS fp8 blocks run on capability 9.0 only, have {cap[0]}.{cap[1]}")
    if cap != (9, 0) and cap[0] not in (10, 12):
        pytest.skip(f"FlashInfer CUTLASS needs capability 9.0/10.x/12.x, have {cap[0]}.{cap[1]}")
    config = MoEConfig(num_experts=16, top_k=4, hidden_size=1024, intermediate_size=768, quant=quant)
    weights = random_weights(config, seed=0, device=DEV)
    hidden, logits = random_inputs(config, tokens, seed=1, device=DEV)
    topk_weights, topk_ids = route(logits, config)
    converted = convert(weights, config)
    quant_config = oracle_for(config).make_quant_config(converted.config, converted)
    experts = FlashInferCutlassExperts(converted.config, quant_config, converted)
    out = experts.apply(hidden, topk_weights, topk_ids)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    assert_close(out, expected, config=config, name=f"flashinfer_cutlass {quant} T={tokens}")

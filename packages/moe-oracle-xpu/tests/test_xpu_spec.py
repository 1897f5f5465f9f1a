"""Every support rule of the xpu and xpu_ipex specs on simulated platforms, with its exact reason."""

from __future__ import annotations

import pytest
import torch

from moe_oracle import MoEConfig, ParallelConfig, Platform, RoutingConfig
from moe_oracle.plugin import release
from moe_oracle_xpu.xpu.spec import XPU_SCHEMES, XPU_SPEC
from moe_oracle_xpu.xpu_ipex.spec import XPU_IPEX_SPEC, torch_version

XPU = Platform.simulate("xpu", libraries={"vllm_xpu_kernels": "0.1.16"})
IPEX = Platform.simulate("xpu", libraries={"intel_extension_for_pytorch": "2.8.10+xpu", "torch": "2.8.0"})


def _config(**kw: object) -> MoEConfig:
    return MoEConfig(**{"num_experts": 8, "top_k": 2, "hidden_size": 256, "intermediate_size": 256, **kw})  # type: ignore[arg-type]


def _reason(spec: object, config: MoEConfig, platform: Platform) -> str:
    support = spec.supports(config, platform)  # type: ignore[attr-defined]
    assert not support.ok
    return support.reason


@pytest.mark.parametrize("scheme", sorted(XPU_SCHEMES))
@pytest.mark.parametrize("activation", ["silu", "gelu", "swigluoai", "relu2"])
def test_xpu_serves_every_claimed_scheme_and_activation(scheme: str, activation: str) -> None:
    config = _config(quant=scheme, activation=activation, dtype="fp16" if scheme == "fp16" else "bf16")
    assert XPU_SPEC.supports(config, XPU).ok


def test_xpu_library_and_version() -> None:
    assert _reason(XPU_SPEC, _config(), Platform.simulate("xpu")) == (
        "vllm_xpu_kernels not installed (pip install vllm-xpu-kernels)")
    old = Platform.parse("xpu,vllm_xpu_kernels=0.1.8")
    assert _reason(XPU_SPEC, _config(), old) == (
        "needs vllm_xpu_kernels >= 0.1.12 (XpuFusedMoe that infers the scheme from the weights), have 0.1.8")
    assert XPU_SPEC.supports(_config(), Platform.parse("xpu,vllm_xpu_kernels=0.1.16.2")).ok


def test_xpu_rules() -> None:
    assert _reason(XPU_SPEC, _config(quant="fp8_block"), XPU) == "does not support scheme fp8_block"
    assert _reason(XPU_SPEC, _config(quant="fp8_tensor", dtype="fp32"), XPU) == (
        "computes in bf16/fp16, config dtype is fp32")
    assert _reason(XPU_SPEC, _config(quant="int4_w4a16_g64"), XPU) == (
        "int4_w4a16 only with group size 128 and no zero points (the library's uint4 kernels assume zero point 8), "
        "scheme is int4_w4a16_g64")
    assert _reason(XPU_SPEC, _config(quant="int4_w4a16_zp"), XPU).endswith("scheme is int4_w4a16_zp")
    assert _reason(XPU_SPEC, _config(is_gated=False), XPU) == (
        "runs silu only gated (act(gate) * up), config is not gated")
    assert _reason(XPU_SPEC, _config(activation="swigluoai", swiglu_alpha=1.0), XPU) == (
        "swigluoai with alpha 1.702 and limit 7.0 only (the library's constants), config has alpha 1.0 and limit 7.0")
    assert XPU_SPEC.supports(_config(swiglu_limit=5.0), XPU).ok            # clamped silu: gemm1_clamp_limit
    assert _reason(XPU_SPEC, _config(quant="mxfp4", intermediate_size=240), XPU) == (
        "mxfp4 needs hidden_size and intermediate_size per partition multiples of 32 (whole scale groups), "
        "have H=256, I=240")
    assert _reason(XPU_SPEC, _config(activation="relu2", intermediate_size=255), XPU) == (
        "relu2 needs an even intermediate size per partition (the library halves it), have I=255")
    assert _reason(XPU_SPEC, _config(top_k=1, apply_router_weight_on_input=True), XPU) == (
        "applies router weights to the expert output only, config has apply_router_weight_on_input")
    assert XPU_SPEC.supports(_config(parallel=ParallelConfig(ep_size=2, ep_rank=1)), XPU).ok


def test_ipex_torch_version_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert XPU_IPEX_SPEC.supports(_config(), IPEX).ok
    newer = Platform.simulate("xpu", libraries={"intel_extension_for_pytorch": "2.8.10+xpu", "torch": "2.9.1"})
    assert _reason(XPU_IPEX_SPEC, _config(), newer) == (
        "intel_extension_for_pytorch 2.8.10+xpu needs torch 2.8.*, have torch 2.9.1 (IPEX refuses to import with "
        "another torch; 2.8 is its last release)")
    # Without a torch entry the platform describes this process, whose torch is what IPEX would meet;
    # that torch is pinned here so the test does not depend on the machine's.
    here = Platform.simulate("xpu", libraries={"intel_extension_for_pytorch": "2.8.10+xpu"})
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    assert torch_version(here) == "2.9.1"
    assert _reason(XPU_IPEX_SPEC, _config(), here).endswith(
        "have torch 2.9.1 (IPEX refuses to import with another torch; 2.8 is its last release)")
    monkeypatch.setattr(torch, "__version__", "2.8.0+xpu")
    assert XPU_IPEX_SPEC.supports(_config(), here).ok


def test_ipex_rules() -> None:
    assert _reason(XPU_IPEX_SPEC, _config(quant="fp8_tensor"), IPEX) == "does not support scheme fp8_tensor"
    assert _reason(XPU_IPEX_SPEC, _config(activation="gelu"), IPEX) == "does not support activation gelu"
    assert _reason(XPU_IPEX_SPEC, _config(has_bias=True), IPEX) == (
        "runs gated silu without biases or clamping only, config has is_gated=True has_bias=True swiglu_limit=None")
    deepseek = RoutingConfig(scoring="sigmoid", num_expert_groups=4, topk_groups=2, score_correction_bias=True,
                             routed_scaling_factor=2.5)
    assert _reason(XPU_IPEX_SPEC, _config(routing=deepseek), IPEX) == (
        "routes inside with softmax top-k or grouped top-k only; config has routed_scaling_factor=2.5, "
        "a score-correction bias")
    assert _reason(XPU_IPEX_SPEC, _config(routing=RoutingConfig(scoring="sigmoid")), IPEX).endswith(
        "config has sigmoid scores without expert groups")
    assert _reason(XPU_IPEX_SPEC, _config(routing=RoutingConfig(softmax_after_topk=True)), IPEX).endswith(
        "config has softmax after top-k (gpt-oss)")
    grouped = RoutingConfig(scoring="sigmoid", num_expert_groups=4, topk_groups=2)
    assert XPU_IPEX_SPEC.supports(_config(routing=grouped), IPEX).ok
    assert _reason(XPU_IPEX_SPEC, _config(parallel=ParallelConfig(ep_size=2)), IPEX) == (
        "takes all experts on one rank (GatedMLPMOE has no expert offset), ep_size=2")


def test_release_parsing() -> None:
    assert release("2.8.10+xpu") == (2, 8, 10)
    assert release("v0.1.16.2") == (0, 1, 16, 2)
    assert release("unknown") == ()

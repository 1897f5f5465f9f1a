"""Every support rule of the aiter spec on simulated platforms, with its exact reason."""

from __future__ import annotations

import pytest

from moe_oracle import MoEConfig, ParallelConfig, Platform
from moe_oracle_rocm.aiter.spec import AITER_SCHEMES, AITER_SPEC

GFX942 = Platform.simulate("rocm", arch="gfx942", libraries={"aiter": "0.1.7"})
GFX950 = Platform.simulate("rocm", arch="gfx950", libraries={"aiter": "0.1.7"})


def _config(**kw: object) -> MoEConfig:
    return MoEConfig(**{"num_experts": 8, "top_k": 2, "hidden_size": 256, "intermediate_size": 256, **kw})  # type: ignore[arg-type]


def _reason(config: MoEConfig, platform: Platform) -> str:
    support = AITER_SPEC.supports(config, platform)
    assert not support.ok
    return support.reason


@pytest.mark.parametrize("scheme", sorted(AITER_SCHEMES))
def test_every_claimed_scheme_is_served_somewhere(scheme: str) -> None:
    platform = GFX942 if scheme == "w4a8_fp8" else GFX950
    activation = "swigluoai" if scheme.startswith("mxfp4") else "silu"
    config = _config(quant=scheme, dtype="fp16" if scheme == "fp16" else "bf16", activation=activation)
    assert AITER_SPEC.supports(config, platform).ok


def test_parse_matches_simulate() -> None:
    platform = Platform.parse("rocm:gfx942,aiter=0.1.7")
    assert AITER_SPEC.supports(_config(quant="fp8_block"), platform).ok


def test_other_vendors_and_missing_library() -> None:
    assert _reason(_config(), Platform.simulate("cuda", capability=(9, 0))) == "serves rocm, not cuda"
    assert _reason(_config(), Platform.simulate("rocm", arch="gfx942")) == "aiter not installed (pip install amd-aiter)"


def test_aiter_version() -> None:
    assert _reason(_config(), Platform.parse("rocm:gfx942,aiter=0.1.6")) == (
        "needs aiter >= 0.1.7 (fused_moe with hidden_pad, intermediate_pad, bias1, bias2), have 0.1.6")
    assert AITER_SPEC.supports(_config(), Platform.parse("rocm:gfx942,aiter=0.1.7.post2.dev18")).ok


@pytest.mark.parametrize("value", ["0", "false", "off", "no", "OFF"])
def test_env_switch_disables_and_says_so(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MOE_ORACLE_ROCM_AITER", value)
    assert _reason(_config(), GFX942) == f"disabled by MOE_ORACLE_ROCM_AITER={value} (unset it or set 1 to enable)"


def test_env_switch_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOE_ORACLE_ROCM_AITER", "1")
    assert AITER_SPEC.supports(_config(), GFX942).ok


@pytest.mark.parametrize("value", ["disable", "2"])
def test_unknown_switch_values_are_refused_with_the_allowed_ones(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from moe_oracle.plugin import ConfigError
    from moe_oracle_rocm.aiter.spec import aiter_enabled

    monkeypatch.setenv("MOE_ORACLE_ROCM_AITER", value)
    with pytest.raises(ConfigError, match=rf"MOE_ORACLE_ROCM_AITER: unknown value '{value}' \(allowed: , 1, true"):
        aiter_enabled()


def test_arch() -> None:
    mi250 = Platform.simulate("rocm", arch="gfx90a", libraries={"aiter": "0.1.7"})
    assert _reason(_config(), mi250) == "needs arch gfx942/gfx950 (AITER's fused-MoE kernels target CDNA3/CDNA4), have gfx90a"


def test_dtype() -> None:
    assert _reason(_config(dtype="fp32"), GFX942) == "does not support scheme fp32"
    assert _reason(_config(dtype="fp32", quant="fp8_block"), GFX942) == "computes in bf16/fp16, config dtype is fp32"


def test_mxfp4_only_on_gfx950() -> None:
    for scheme in ("mxfp4", "mxfp4_a8"):
        assert _reason(_config(quant=scheme, activation="swigluoai"), GFX942) == (
            f"{scheme} needs arch gfx950 (AITER's MXFP4 MoE kernels are built for gfx950 (CDNA4) only), have gfx942")


def test_w4a8_only_on_gfx942() -> None:
    assert _reason(_config(quant="w4a8_fp8"), GFX950) == (
        "w4a8_fp8 needs arch gfx942 (AITER ships its int4 x fp8 MoE kernels (fmoe_int4fp8) for gfx942 only), "
        "have gfx950")


def test_unsupported_activation_and_ungated() -> None:
    assert _reason(_config(activation="relu2"), GFX942) == "does not support activation relu2"
    assert _reason(_config(is_gated=False), GFX942) == (
        "needs a gated activation (AITER fuses act(gate) * up), silu is not gated here")


def test_swigluoai_rules() -> None:
    assert AITER_SPEC.supports(_config(quant="mxfp4", activation="swigluoai", has_bias=True), GFX950).ok
    assert _reason(_config(activation="swigluoai"), GFX950) == (
        "runs swigluoai only on the mxfp4 path (AITER's Swiglu kernels are its a16w4 ones), scheme is bf16")
    assert _reason(_config(quant="mxfp4", activation="swigluoai", swiglu_limit=10.0), GFX950) == (
        "swigluoai with alpha 1.702 and limit 7.0 only (AITER's constants), config has alpha 1.702 and limit 10.0")
    assert _reason(_config(swiglu_limit=7.0), GFX950) == (
        "does not clamp silu (swiglu_limit=7.0); AITER clamps only inside its swigluoai kernel")
    assert _reason(_config(quant="mxfp4_a8"), GFX950) == (
        "runs mxfp4_a8 only with swigluoai: on its per_1x32 path AITER quantizes silu activations to MXFP4 "
        "(w4a4, another scheme)")


def test_bias_only_with_mxfp4() -> None:
    assert _reason(_config(quant="fp8_block", has_bias=True), GFX942) == (
        "takes biases only on the mxfp4 path (bias1/bias2 of AITER's a16w4 kernels), scheme is fp8_block")


def test_shapes() -> None:
    assert _reason(_config(hidden_size=200), GFX942) == (
        "needs hidden_size and intermediate_size per partition multiples of 32 (the (16, 16) weight shuffle's "
        "32-wide K tiles), have H=200, I=256")
    assert _reason(_config(quant="fp8_block", intermediate_size=192), GFX942) == (
        "needs hidden_size and intermediate_size per partition multiples of 128 (128x128 weight blocks), "
        "have H=256, I=192")
    gpt_oss = _config(quant="mxfp4", activation="swigluoai", hidden_size=2880, intermediate_size=2880)
    assert AITER_SPEC.supports(gpt_oss, GFX950).ok                          # the converter pads to 256
    assert AITER_SPEC.supports(_config(intermediate_size=512, parallel=ParallelConfig(tp_size=8)), GFX942).ok
    assert _reason(_config(intermediate_size=384, parallel=ParallelConfig(tp_size=8)), GFX942).endswith(
        "have H=256, I=48")                                                 # the per-partition size counts


def test_router_weight_on_input() -> None:
    assert AITER_SPEC.supports(_config(top_k=1, apply_router_weight_on_input=True), GFX942).ok
    assert _reason(_config(quant="fp8_block", top_k=1, apply_router_weight_on_input=True), GFX942) == (
        "applies the router weight on the input (doweight_stage1) for every scheme but fp8_block")


def test_batched_format_is_not_served() -> None:
    config = _config(parallel=ParallelConfig(ep_size=2, all2all="deepep_low_latency"))
    assert _reason(config, GFX942) == (
        "takes the standard activation format, all2all='deepep_low_latency' gives batched")

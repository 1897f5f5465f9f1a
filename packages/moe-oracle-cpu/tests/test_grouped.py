"""``cpu_grouped`` specifics: its layout and round trip, per-tile dequantization, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

import moe_oracle.plugin
from moe_oracle import InputError, MoEConfig, Platform, WeightError
from moe_oracle.testing import canonical_kernel_weights, oracle_for, random_weights
from moe_oracle_cpu.cpu_grouped import converter as converter_module
from moe_oracle_cpu.cpu_grouped import native
from moe_oracle_cpu.cpu_grouped.converter import NATIVE_LAYOUT, PACKED_LAYOUT, convert, to_canonical
from moe_oracle_cpu.cpu_grouped.experts import GroupedExperts

FEATURES = Platform.detect().features
# An AVX2-only AMD Zen 3 as Platform.detect() sees it: no AVX-512, no oneDNN bf16 GEMMs.
ZEN3 = frozenset({"amd", "avx2", "fma", "f16c"})

BASE: dict[str, Any] = {"num_experts": 8, "top_k": 2, "hidden_size": 128, "intermediate_size": 64}


@pytest.fixture
def onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    """cpu_grouped with its native kernels switched off: the oneDNN-packed path."""
    monkeypatch.setenv(native.ENV_SWITCH, "0")


@pytest.mark.usefixtures("onednn")
@pytest.mark.parametrize(("overrides", "layout", "packed"), [
    ({}, PACKED_LAYOUT, ("gate", "up", "w2")),
    ({"dtype": "fp32", "activation": "gelu", "has_bias": True}, PACKED_LAYOUT, ("gate", "up", "w2")),
    ({"activation": "swigluoai"}, PACKED_LAYOUT, ("w13", "w2")),
    ({"activation": "silu", "swiglu_limit": 1.0}, PACKED_LAYOUT, ("w13", "w2")),
    ({"activation": "relu2"}, PACKED_LAYOUT, ("w13", "w2")),
    ({"dtype": "fp16"}, "canonical", ()),
    ({"quant": "int4_w4a16_g64_zp"}, "canonical", ()),
])
def test_layout_round_trips_to_canonical(overrides: dict[str, Any], layout: str, packed: tuple[str, ...]) -> None:
    config = MoEConfig(**BASE, **overrides)
    weights = random_weights(config, seed=0)
    before = {name: t.clone() for name, t in weights.items()}
    converted = convert(weights, config)
    assert converted.backend == "cpu_grouped" and converted.layout == layout
    assert tuple(converted.extras) == packed
    for name in packed:
        assert len(converted.extras[name]) == 8 and converted.extras[name][0].layout == torch._mkldnn
    back = dict(to_canonical(converted).items())
    assert back.keys() == before.keys()
    for name, t in before.items():
        assert torch.equal(back[name], t), name
        assert torch.equal(getattr(weights, name), t), f"convert modified the input {name}"
    assert converted.w13 is weights.w13                                         # canonical tensors are shared


@pytest.mark.parametrize(("overrides", "w13"), [
    ({}, "w13_gate_up_panels"),
    ({"dtype": "fp32"}, "w13_gate_up_panels"),
    ({"dtype": "fp32", "activation": "gelu", "has_bias": True}, "w13_panels"),
    ({"activation": "swigluoai"}, "w13_panels"),
    ({"has_bias": True}, "w13_panels"),
])
def test_native_layout_round_trips_to_canonical(overrides: dict[str, Any], w13: str) -> None:
    config = MoEConfig(**BASE, **overrides)
    build, reason = native.choose_build(config, FEATURES)
    if not build or (reason := native.load_error(build)):
        pytest.skip(f"native kernels do not run here: {reason}")
    weights = random_weights(config, seed=0)
    before = {name: t.clone() for name, t in weights.items()}
    converted = convert(weights, config)
    assert converted.layout == f"{NATIVE_LAYOUT}:{build}" and tuple(converted.extras) == (w13, "w2_panels")
    panels = converted.extras[w13].codes
    # Panel 1, column 7: w13 row 64 + 7 in order; interleaved, the gate row 32 + 7 (panel 1 = gate 32..63, up 96..127).
    row = 64 + 7 if w13 == "w13_panels" else 32 + 7
    if config.dtype == torch.bfloat16:
        assert panels.shape == (8, 128 // 64, 128 // 2, 64, 2)
        assert torch.equal(panels[3, 1, 5, 7], weights.w13[3, row, 10:12])       # [e, n/64, k/2, n%64, k%2]
    else:
        assert panels.shape == (8, 128 // 64, 128, 64)
        assert torch.equal(panels[3, 1, 5, 7], weights.w13[3, row, 5])
    if w13 == "w13_gate_up_panels":
        assert torch.equal(panels[3, 1, 5, 32 + 7], weights.w13[3, 64 + 32 + 7, 10:12] if config.dtype == torch.bfloat16
                           else weights.w13[3, 64 + 32 + 7, 5])                  # its up row
    back = dict(to_canonical(converted).items())
    for name, t in before.items():
        assert torch.equal(back[name], t), name
        assert torch.equal(getattr(weights, name), t), f"convert modified the input {name}"


@pytest.mark.parametrize(("overrides", "env", "reason"), [
    ({}, "0", "MOE_ORACLE_CPU_NATIVE=0 turns the native kernels off"),
    ({"dtype": "fp16"}, "1", "take bf16, fp32 or quantized experts, not fp16 torch.float16"),
    ({"intermediate_size": 48}, "1", "w13 rows and the hidden size to be multiples of 64, have 96 and 128"),
    ({"hidden_size": 96}, "1", "w13 rows and the hidden size to be multiples of 64, have 128 and 96"),
    ({}, "avx512", "MOE_ORACLE_CPU_NATIVE=avx512 needs the CPU features avx512, which this CPU lacks"),
    ({}, "avx2", "MOE_ORACLE_CPU_NATIVE=avx2 needs the CPU features avx2, fma, which this CPU lacks"),
])
def test_native_refusals_say_why(monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any], env: str,
                                 reason: str) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, env)
    config = MoEConfig(**{**BASE, **overrides})
    assert reason in native.unsupported(config, frozenset({"neon"}) if env in native.ISAS else FEATURES)
    if env not in native.ISAS:
        assert not convert(random_weights(config, seed=0), config).layout.startswith(NATIVE_LAYOUT)


@pytest.mark.parametrize(("features", "env", "bf16", "fp32", "quantized"), [
    ({"avx512", "avx512_bf16", "avx2", "fma"}, "1", "avx512", "avx512", "vec_avx512"),
    ({"avx512", "avx2", "fma"}, "1", "vec_avx512", "avx512", "vec_avx512"),      # Skylake-X: no AVX512-BF16
    (ZEN3, "1", "vec_avx2", "vec_avx2", "vec_avx2"),
    ({"neon", "sve"}, "1", "vec_portable", "vec_portable", "vec_portable"),         # aarch64
    (set(), "1", "vec_portable", "vec_portable", "vec_portable"),                   # any other CPU
    ({"avx512", "avx512_bf16", "avx2", "fma"}, "avx2", "vec_avx2", "vec_avx2", "vec_avx2"),
    ({"avx512", "avx512_bf16", "avx2", "fma"}, "portable", "vec_portable", "vec_portable", "vec_portable"),
    ({"avx512", "avx2", "fma"}, "avx512", "vec_avx512", "avx512", "vec_avx512"),
])
def test_each_cpu_gets_the_build_its_features_run(monkeypatch: pytest.MonkeyPatch, features: set[str], env: str,
                                                  bf16: str, fp32: str, quantized: str) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, env)
    for config, build in ((MoEConfig(**BASE), bf16), (MoEConfig(**BASE, dtype="fp32"), fp32),
                          (MoEConfig(**BASE, quant="mxfp4"), quantized)):
        assert native.choose_build(config, frozenset(features)) == (build, ""), config.scheme.name


def test_bf16_on_an_avx2_cpu_without_native_kernels_computes_in_fp32(monkeypatch: pytest.MonkeyPatch,
                                                                     routed: Callable[..., Any]) -> None:
    """On a CPU without oneDNN bf16 GEMMs (AVX2 only) the oneDNN bf16 reorder would raise: the weights
    stay canonical and the tiles path computes in fp32 (bf16 torch.mm runs at 0.9 GFLOP/s there)."""
    from moe_oracle.testing import assert_close, reference_moe
    from moe_oracle_cpu.cpu_grouped import experts as experts_module

    monkeypatch.setenv(native.ENV_SWITCH, "0")
    monkeypatch.setattr(converter_module, "cpu_features", lambda: ZEN3)
    monkeypatch.setattr(experts_module, "cpu_features", lambda: ZEN3)
    config = MoEConfig(**BASE)
    weights = random_weights(config, seed=0)
    converted = convert(weights, config)
    assert converted.layout == "canonical" and not converted.extras
    experts = GroupedExperts(config, oracle_for(config).make_quant_config(config, converted), converted)
    assert experts.dtype == torch.float32
    hidden, topk_weights, topk_ids = routed(config, 7, 1)
    out = experts.apply(hidden, topk_weights, topk_ids)
    assert out.dtype == torch.bfloat16
    assert_close(out, reference_moe(config, weights, hidden, topk_weights, topk_ids), config=config)


def test_quantized_native_layers_never_dequantize_an_expert(monkeypatch: pytest.MonkeyPatch,
                                                            routed: Callable[..., Any]) -> None:
    """On a native build, quantized weights are dequantized per panel block inside the C GEMM: no
    full-size dequantized copy of any expert is made."""
    config = MoEConfig(**BASE, quant="int4_w4a16_g32_zp")
    build, reason = native.choose_build(config, FEATURES)
    if not build:
        pytest.skip(reason)
    converted = convert(random_weights(config, seed=0), config)
    assert converted.layout == f"{NATIVE_LAYOUT}:{build}"
    experts = GroupedExperts(config, oracle_for(config).make_quant_config(config, converted), converted)
    monkeypatch.setattr(moe_oracle.plugin, "dequantize_weights", lambda *a, **k: pytest.fail("dequantized an expert"))
    out = experts.apply(*routed(config, 9, 1))
    assert out.shape == (9, 128) and bool(out.isfinite().all())


@pytest.mark.usefixtures("onednn")
def test_quantized_experts_are_dequantized_one_tile_at_a_time(monkeypatch: pytest.MonkeyPatch,
                                                               routed: Callable[..., Any]) -> None:
    config = MoEConfig(**BASE, quant="int4_w4a16")
    weights = random_weights(config, seed=0)
    converted = convert(weights, config)
    experts = GroupedExperts(config, oracle_for(config).make_quant_config(config, converted), converted)
    hidden, topk_weights, topk_ids = routed(config, 5, 1)
    seen: list[int] = []
    real = moe_oracle.plugin.dequantize_weights

    def spy(scheme: Any, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(data.shape[0])
        return real(scheme, data, *args, **kwargs)

    monkeypatch.setattr(moe_oracle.plugin, "dequantize_weights", spy)
    experts.apply(hidden, topk_weights, topk_ids)
    hit = int(topk_ids.unique().numel())
    assert seen == [1] * (2 * hit)                                              # w13 and w2 of each expert hit


@pytest.mark.usefixtures("onednn")
def test_refuses_weights_of_another_backend_or_without_packing() -> None:
    config = MoEConfig(**BASE)
    weights = random_weights(config, seed=0)
    quant = oracle_for(config).make_quant_config(config, weights)
    with pytest.raises(WeightError, match=r"weights: expected weights converted for 'cpu_grouped', "
                                          r"got backend 'reference' layout 'canonical'"):
        GroupedExperts(config, quant, canonical_kernel_weights(weights, config, backend="reference"))
    unpacked = dataclasses.replace(canonical_kernel_weights(weights, config, backend="cpu_grouped"), layout=PACKED_LAYOUT)
    with pytest.raises(WeightError, match=r"weights.extras: expected oneDNN-packed experts .*got layout "
                                          r"'canonical\+onednn_packed' without them"):
        GroupedExperts(config, quant, unpacked)


@pytest.mark.parametrize("activation", ["silu", "gelu"])        # native: one-call layer; sort, GEMMs, activation
def test_input_errors_name_the_argument(routed: Callable[..., Any], activation: str) -> None:
    config = MoEConfig(**BASE, activation=activation)
    converted = convert(random_weights(config, seed=0), config)
    experts = GroupedExperts(config, oracle_for(config).make_quant_config(config, converted), converted)
    hidden, topk_weights, topk_ids = routed(config, 3, 1)
    with pytest.raises(InputError, match=r"hidden: expected dtype bfloat16, got dtype float32"):
        experts.apply(hidden.float(), topk_weights, topk_ids)
    with pytest.raises(InputError, match=r"topk_ids: expected expert ids .* in \[0, 8\), got values in \[0, 9\]"):
        experts.apply(hidden, topk_weights, torch.tensor([[0, 9]] * 3))
    with pytest.raises(InputError, match=r"expert_num_tokens: expected None \(CPU experts take the standard"):
        experts.apply(hidden, topk_weights, topk_ids, expert_num_tokens=torch.ones(8))


@pytest.mark.parametrize("path", ["native", "onednn"])
def test_uses_the_callers_thread_count(monkeypatch: pytest.MonkeyPatch, routed: Callable[..., Any], path: str) -> None:
    """Every op runs on torch's intra-op pool: one thread gives the same result as the default."""
    if path == "onednn":
        monkeypatch.setenv(native.ENV_SWITCH, "0")
    config = MoEConfig(**BASE)
    converted = convert(random_weights(config, seed=0), config)
    experts = GroupedExperts(config, oracle_for(config).make_quant_config(config, converted), converted)
    hidden, topk_weights, topk_ids = routed(config, 9, 1)
    threads = torch.get_num_threads()
    want = experts.apply(hidden, topk_weights, topk_ids)
    torch.set_num_threads(1)
    try:
        got = experts.apply(hidden, topk_weights, topk_ids)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-2)


def test_amx_cpus_send_many_rows_per_expert_to_torch(monkeypatch: pytest.MonkeyPatch, routed: Callable[..., Any]) -> None:
    """With AMX (simulated here), from AMX_TORCH_ROWS rows per expert the layer runs torch.mm on the
    canonical weights (oneDNN's AMX path) instead of the native kernels; both match the reference."""
    from moe_oracle.testing import assert_close, reference_moe
    from moe_oracle_cpu.cpu_grouped import experts as experts_module

    config = MoEConfig(**BASE)
    if native.choose_build(config, FEATURES)[0] != "avx512" or native.load_error("avx512"):
        pytest.skip("the AVX-512 bf16 kernels do not run here")
    monkeypatch.setattr(experts_module, "cpu_features", lambda: FEATURES | {"amx_bf16"})
    weights = random_weights(config, seed=0)
    converted = convert(weights, config)
    experts = GroupedExperts(config, oracle_for(config).make_quant_config(config, converted), converted)
    assert experts.torch_from_pairs == experts_module.AMX_TORCH_ROWS * 8
    calls: list[int] = []
    real = native.forward_silu
    monkeypatch.setattr(native, "forward_silu", lambda *a, **k: calls.append(1) or real(*a, **k))
    for tokens, native_calls in ((63, 1), (64, 1)):   # 63 * 2 < 16 * 8 <= 64 * 2
        hidden, topk_weights, topk_ids = routed(config, tokens, 1)
        out = experts.apply(hidden, topk_weights, topk_ids)
        assert_close(out, reference_moe(config, weights, hidden, topk_weights, topk_ids), config=config)
        assert len(calls) == native_calls


@pytest.mark.parametrize("device", ["meta"])
def test_weights_off_the_cpu_are_a_named_error(device: str) -> None:
    config = MoEConfig(**BASE)
    weights = {name: t.to(device) for name, t in random_weights(config, seed=0).items()}
    from moe_oracle import MoELayer

    layer = MoELayer(config, backend="cpu_grouped")
    with pytest.raises(WeightError, match=r"w13: expected tensors on the CPU \(cpu_grouped's kernels read host "
                                          r"memory\), got device meta"):
        layer.load_weights(**weights)
    assert layer.kernel is None                                               # left as it was

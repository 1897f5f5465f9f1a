"""The FlashInfer experts wrappers end to end on CPU: ``MoELayer`` -> converter -> experts -> a fake
``flashinfer.fused_moe`` (conftest) that records what it receives and answers with the reference
output. Each case checks the entry point, every keyword, dtypes, shapes, the exact tensors (the
converted ones, not copies) and the quantized input the kernel gets."""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from moe_oracle import MoEConfig, MoELayer, ParallelConfig, Platform, RoutingConfig
from moe_oracle.plugin import InputError, WeightError, quantize_activation
from moe_oracle.testing import canonical_kernel_weights, oracle_for, random_inputs, random_weights, reference_moe, route
from moe_oracle_cuda.flashinfer_api import pack_topk
from moe_oracle_cuda.flashinfer_cutlass.experts import (
    CutlassBlockScales,
    CutlassFp8Scales,
    CutlassMxfp8Scales,
    CutlassNvfp4Scales,
    CutlassW4A16Scales,
    FlashInferCutlassExperts,
    cutlass_quant_scales,
)
from moe_oracle_cuda.flashinfer_trtllm.experts import (
    FlashInferTrtllmExperts,
    TrtllmMonolithicExperts,
    TrtllmRoutedExperts,
)
from moe_oracle_cuda.layouts import swizzle_128x4

FIC, FIT = "flashinfer_cutlass", "flashinfer_trtllm"
TOKENS = 5
DEEPSEEK = RoutingConfig(scoring="sigmoid", score_correction_bias=True, num_expert_groups=4, topk_groups=2,
                         routed_scaling_factor=2.5)
SIGMOID = RoutingConfig(scoring="sigmoid")  # no in-kernel router: the routed kernels


@dataclass(frozen=True)
class Case:
    backend: str
    cap: tuple[int, int]
    scheme: str
    entry: str
    activation: str = "silu"
    bias: bool = False
    h: int = 128
    i: int = 128
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.scheme}-{self.activation}-h{self.h}-{self.entry}"


CASES = [
    Case(FIC, (9, 0), "bf16", "cutlass_fused_moe"),
    Case(FIC, (9, 0), "fp16", "cutlass_fused_moe", i=40),
    Case(FIC, (10, 0), "bf16", "cutlass_fused_moe", activation="relu2"),
    Case(FIC, (9, 0), "bf16", "cutlass_fused_moe", activation="swigluoai", bias=True),
    Case(FIC, (9, 0), "bf16", "cutlass_fused_moe", parallel=ParallelConfig(ep_size=2, ep_rank=1)),
    Case(FIC, (9, 0), "fp8_tensor_static", "cutlass_fused_moe"),
    Case(FIC, (9, 0), "fp8_block", "cutlass_fused_moe"),
    Case(FIC, (9, 0), "mxfp4", "cutlass_fused_moe", activation="swigluoai", bias=True, h=96, i=40),
    Case(FIC, (12, 0), "mxfp4_a8", "cutlass_fused_moe", h=96),
    Case(FIC, (10, 0), "nvfp4", "cutlass_fused_moe", bias=True),
    Case(FIT, (10, 0), "bf16", "trtllm_bf16_moe", i=40),
    Case(FIT, (10, 0), "bf16", "trtllm_bf16_moe", activation="relu2", routing=RoutingConfig(renormalize=False)),
    Case(FIT, (10, 0), "bf16", "trtllm_bf16_moe", parallel=ParallelConfig(ep_size=2, ep_rank=1)),
    Case(FIT, (10, 0), "bf16", "trtllm_bf16_routed_moe", routing=SIGMOID),
    Case(FIT, (10, 0), "fp8_tensor_static", "trtllm_fp8_per_tensor_scale_moe"),
    Case(FIT, (10, 0), "fp8_block", "trtllm_fp8_block_scale_moe", h=256, routing=DEEPSEEK),
    Case(FIT, (10, 0), "fp8_block", "trtllm_fp8_block_scale_routed_moe", routing=SIGMOID),
    Case(FIT, (10, 0), "nvfp4", "trtllm_fp4_block_scale_moe", bias=True),
    Case(FIT, (10, 0), "nvfp4", "trtllm_fp4_block_scale_routed_moe", routing=SIGMOID),
    Case(FIT, (10, 0), "mxfp4", "trtllm_fp4_block_scale_moe", activation="swigluoai", bias=True, h=96, i=40,
         routing=RoutingConfig(softmax_after_topk=True)),
    Case(FIT, (10, 0), "mxfp4_a8", "trtllm_fp4_block_scale_moe"),
]


@dataclass
class Run:
    case: Case
    config: MoEConfig
    layer: MoELayer
    hidden: torch.Tensor
    logits: torch.Tensor
    topk_weights: torch.Tensor
    topk_ids: torch.Tensor
    expected: torch.Tensor
    out: torch.Tensor
    args: dict[str, Any]
    positional: int

    @property
    def t(self) -> dict[str, torch.Tensor]:
        assert self.layer.kernel_weights is not None
        return dict(self.layer.kernel_weights.tensors)

    @property
    def h_pad(self) -> int:
        assert self.layer.kernel_weights is not None
        return self.layer.kernel_weights.config.hidden_size


def run(fake: Any, case: Case) -> Run:
    fake.calls.clear()
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=case.h, intermediate_size=case.i, quant=case.scheme,
                       dtype="fp16" if case.scheme == "fp16" else "bf16", activation=case.activation,
                       has_bias=case.bias, routing=case.routing, parallel=case.parallel)
    platform = Platform.simulate("cuda", capability=case.cap, libraries={"flashinfer": "0.6.13", "triton": "3.6.0"})
    layer = MoELayer(config, backend=case.backend, platform=platform)
    weights = random_weights(config, seed=0)
    layer.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, TOKENS, seed=1)
    topk_weights, topk_ids = route(logits, config, score_correction_bias=weights.score_correction_bias)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=layer.expert_map)
    assert layer.kernel_weights is not None
    h_pad = layer.kernel_weights.config.hidden_size
    fake.result = lambda name, args: F.pad(expected, (0, h_pad - case.h))
    out = layer(hidden, logits)
    assert [c.name for c in fake.calls] == [case.entry]
    call = fake.last
    return Run(case, config, layer, hidden, logits, topk_weights, topk_ids, expected, out, call.args, call.positional)


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.numel() * a.element_size() == b.numel() * b.element_size()


def _pad(r: Run, x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, r.h_pad - r.case.h))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer_runs_end_to_end_with_the_reference_result(fake_flashinfer: Any, case: Case) -> None:
    r = run(fake_flashinfer, case)
    assert r.out.shape == (TOKENS, case.h) and r.out.dtype == r.config.dtype
    assert torch.equal(r.out, r.expected)


# CUTLASS ------------------------------------------------------------------------------------------
def _cutlass_input(r: Run) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = _pad(r, r.hidden)
    if r.case.scheme == "fp8_tensor_static":
        return quantize_activation(r.config.scheme, x, scale=r.t["a13_scale"])[0], None
    if r.case.scheme == "mxfp4_a8":
        q, sf = quantize_activation(r.config.scheme, x)
        return q, swizzle_128x4(sf[None]).reshape(-1)
    return x, None


@pytest.mark.parametrize("case", [c for c in CASES if c.backend == FIC], ids=[c.id for c in CASES if c.backend == FIC])
def test_cutlass_call_arguments(fake_flashinfer: Any, case: Case) -> None:
    r = run(fake_flashinfer, case)
    a, t, p = r.args, r.t, r.config.parallel
    assert r.positional == 5  # the leading tensors; everything after them by keyword
    assert a["token_selected_experts"].dtype == torch.int32 and torch.equal(a["token_selected_experts"], r.topk_ids)
    assert a["token_final_scales"].dtype == torch.float32 and torch.equal(a["token_final_scales"], r.topk_weights)
    x, sf = _cutlass_input(r)
    assert a["input"].dtype == x.dtype and a["input"].shape == (TOKENS, r.h_pad)
    assert torch.equal(a["input"].view(torch.uint8), x.view(torch.uint8)) if x.element_size() == 1 else torch.equal(
        a["input"], x)
    assert (a["input_sf"] is None) == (sf is None) and (sf is None or torch.equal(a["input_sf"], sf))
    packed = case.scheme in ("mxfp4_a8", "nvfp4")
    assert a["fc1_expert_weights"].dtype == (torch.int64 if packed else t["w13"].dtype)
    assert _same_storage(a["fc1_expert_weights"], t["w13"]) and _same_storage(a["fc2_expert_weights"], t["w2"])
    assert a["output_dtype"] == r.config.dtype
    assert a["activation_type"] == (6 if case.activation == "relu2" else 3)
    assert (a["tp_size"], a["tp_rank"], a["ep_size"], a["ep_rank"]) == (p.tp_size, p.tp_rank, p.ep_size, p.ep_rank)
    assert a["use_deepseek_fp8_block_scale"] is (case.scheme == "fp8_block")
    assert a["use_w4_group_scaling"] is (case.scheme == "mxfp4")
    assert a["use_mxfp8_act_scaling"] is (case.scheme == "mxfp4_a8")
    for kernel_name, name in (("fc1_expert_biases", "w13_bias"), ("fc2_expert_biases", "w2_bias")):
        assert (a[kernel_name] is None) != case.bias
        if case.bias:
            assert a[kernel_name].dtype == r.config.dtype and torch.equal(a[kernel_name], t[name].to(r.config.dtype))
    for name in ("swiglu_alpha", "swiglu_beta", "swiglu_limit"):
        assert (a[name] is t.get(name)) and ((a[name] is None) == (case.activation != "swigluoai"))
    scales = cutlass_quant_scales(r.layer.kernel_weights)  # type: ignore[arg-type]
    if scales is None:
        assert a["quant_scales"] is None
    else:
        assert len(a["quant_scales"]) == len(scales.as_list())
        assert all(torch.equal(x, y) for x, y in zip(a["quant_scales"], scales.as_list(), strict=True))


def test_cutlass_quant_scale_records_field_by_field(fake_flashinfer: Any) -> None:
    fp8 = run(fake_flashinfer, CASES[5])
    s = cutlass_quant_scales(fp8.layer.kernel_weights)  # type: ignore[arg-type]
    assert isinstance(s, CutlassFp8Scales)
    assert s.fc1_dequant is fp8.t["fc1_dequant"] and s.fc2_quant is fp8.t["fc2_quant"]
    assert s.fc2_dequant is fp8.t["fc2_dequant"] and s.fc1_input_dequant is fp8.t["fc1_input_dequant"]
    assert [f for f in s.__dataclass_fields__] == ["fc1_dequant", "fc2_quant", "fc2_dequant", "fc1_input_dequant"]

    block = run(fake_flashinfer, CASES[6])
    s = cutlass_quant_scales(block.layer.kernel_weights)  # type: ignore[arg-type]
    assert isinstance(s, CutlassBlockScales)
    assert s.fc1_block is block.t["w13_scale"] and s.fc2_block is block.t["w2_scale"]

    w4 = run(fake_flashinfer, CASES[7])
    s = cutlass_quant_scales(w4.layer.kernel_weights)  # type: ignore[arg-type]
    assert isinstance(s, CutlassW4A16Scales)
    assert s.fc1_block is w4.t["w13_scale"] and s.fc2_block is w4.t["w2_scale"]
    assert s.fc1_block.shape == (8, 1, 4 * 256) and s.fc2_block.shape == (8, 1, 4 * 128)

    mx = run(fake_flashinfer, CASES[8])
    s = cutlass_quant_scales(mx.layer.kernel_weights)  # type: ignore[arg-type]
    assert isinstance(s, CutlassMxfp8Scales)
    assert s.fc1_block.dtype == torch.int32 and s.fc1_block.shape == (8, 256, 1)
    assert _same_storage(s.fc1_block, mx.t["w13_scale"]) and _same_storage(s.fc2_block, mx.t["w2_scale"])
    assert s.fc1_global.tolist() == [1.0] * 8 and s.fc2_global.tolist() == [1.0] * 8

    nv = run(fake_flashinfer, CASES[9])
    s = cutlass_quant_scales(nv.layer.kernel_weights)  # type: ignore[arg-type]
    assert isinstance(s, CutlassNvfp4Scales)
    assert s.fc1_act_global is nv.t["fc1_act_global"] and s.fc2_act_global is nv.t["fc2_act_global"]
    assert s.fc1_alpha is nv.t["fc1_alpha"] and s.fc2_alpha is nv.t["fc2_alpha"]
    assert s.fc1_block.dtype == torch.int32 and s.fc1_block.shape == (8, 256, 2)
    assert _same_storage(s.fc1_block, nv.t["w13_scale"]) and _same_storage(s.fc2_block, nv.t["w2_scale"])


# TRTLLM -------------------------------------------------------------------------------------------
FIT_CASES = [c for c in CASES if c.backend == FIT]


@pytest.mark.parametrize("case", FIT_CASES, ids=[c.id for c in FIT_CASES])
def test_trtllm_call_arguments(fake_flashinfer: Any, case: Case) -> None:
    r = run(fake_flashinfer, case)
    a, t, c = r.args, r.t, r.config
    assert r.positional == 0  # every argument by keyword
    routed = "routed" in case.entry
    experts = r.layer.kernel.experts  # type: ignore[union-attr]
    assert type(experts) is (TrtllmRoutedExperts if routed else TrtllmMonolithicExperts)
    assert isinstance(experts, FlashInferTrtllmExperts)
    assert (a["num_experts"], a["top_k"]) == (8, 2)
    assert a["intermediate_size"] == r.layer.kernel_weights.config.intermediate_size_per_partition  # type: ignore[union-attr]
    assert (a["local_expert_offset"], a["local_num_experts"]) == (c.parallel.ep_rank * c.num_local_experts,
                                                                  c.num_local_experts)
    if routed:
        assert a["topk_ids"].dtype == torch.int32
        assert torch.equal(a["topk_ids"], pack_topk(r.topk_ids, r.topk_weights))
        assert (a["routing_method_type"], a["n_group"], a["topk_group"], a["routed_scaling_factor"]) == (5, None, None,
                                                                                                          None)
    else:
        method = {"DeepSeekV3": 2, "Renormalize": 1, "Default": 0}.get(
            "DeepSeekV3" if c.routing.grouped else "Renormalize" if c.routing.softmax_after_topk
            else "RenormalizeNaive" if c.routing.renormalize else "Default", 4)
        assert a["routing_method_type"] == method
        logits_dtype = torch.float32 if method == 2 else torch.bfloat16
        assert a["routing_logits"].dtype == logits_dtype and torch.equal(a["routing_logits"], r.logits.to(logits_dtype))
        assert (a["n_group"], a["topk_group"]) == (c.routing.num_expert_groups, c.routing.topk_groups)
        assert a["routed_scaling_factor"] == (2.5 if method == 2 else None)
        if method == 2:
            bias = r.layer.canonical.score_correction_bias  # type: ignore[union-attr]
            assert a["routing_bias"].dtype == torch.bfloat16 and torch.equal(a["routing_bias"], bias.to(torch.bfloat16))
        else:
            assert a["routing_bias"] is None
    assert a["activation_type"] == (6 if case.activation == "relu2" else 3)
    assert _same_storage(a["gemm1_weights"], t["w13"]) and _same_storage(a["gemm2_weights"], t["w2"])
    CHECKS[case.scheme](r, a, t)


def _bf16(r: Run, a: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    assert torch.equal(a["hidden_states"], r.hidden)
    assert a["gemm1_weights"].dim() == 4 and a["use_shuffled_weight"] is True and a["weight_layout"] == 2


def _fp8_tensor(r: Run, a: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    q = quantize_activation(r.config.scheme, r.hidden, scale=t["a13_scale"])[0]
    assert a["hidden_states"].dtype == torch.float8_e4m3fn and torch.equal(a["hidden_states"].float(), q.float())
    assert a["output1_scales_scalar"] is t["output1_scale"] and a["output1_scales_gate_scalar"] is t["output1_gate_scale"]
    assert a["output2_scales_scalar"] is t["output2_scale"] and a["use_routing_scales_on_input"] is False


def _fp8_block(r: Run, a: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    q, sf = quantize_activation(r.config.scheme, r.hidden)
    assert a["hidden_states"].dtype == torch.float8_e4m3fn and torch.equal(a["hidden_states"].float(), q.float())
    assert a["hidden_states_scale"].shape == (r.case.h // 128, TOKENS)  # transposed, as DeepSeekFp8 wants
    assert torch.equal(a["hidden_states_scale"], sf.t())
    assert a["gemm1_weights_scale"] is t["w13_scale"] and a["gemm2_weights_scale"] is t["w2_scale"]
    assert (a["use_shuffled_weight"], a["weight_layout"], a["fp8_quantization_type"]) == (False, 0, 1)


def _fp4(r: Run, a: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    scheme = r.case.scheme
    x = _pad(r, r.hidden)
    if scheme == "mxfp4":
        assert torch.equal(a["hidden_states"], x) and a["hidden_states_scale"] is None
    else:
        q, sf = quantize_activation(r.config.scheme, x, scale=t["a13_scale"] if scheme == "nvfp4" else None)
        assert torch.equal(a["hidden_states"].view(torch.uint8), q.view(torch.uint8))
        assert a["hidden_states_scale"].dtype == torch.float8_e4m3fn
        assert torch.equal(a["hidden_states_scale"].view(torch.uint8), sf.view(torch.uint8))
    for gemm, name in (("gemm1", "w13"), ("gemm2", "w2")):
        assert a[f"{gemm}_weights_scale"].dtype == torch.float8_e4m3fn
        assert _same_storage(a[f"{gemm}_weights_scale"], t[f"{name}_scale"])
        bias = t.get(f"{name}_bias")
        assert (a[f"{gemm}_bias"] is None) == (bias is None)
        if bias is not None:
            assert a[f"{gemm}_bias"].dtype == torch.float32 and torch.equal(a[f"{gemm}_bias"], bias.float())
    swiglu = r.case.activation == "swigluoai"
    for kernel_name, name in (("gemm1_alpha", "swiglu_alpha"), ("gemm1_beta", "swiglu_beta"),
                              ("gemm1_clamp_limit", "swiglu_limit")):
        assert (a[kernel_name] is t.get(name)) and ((a[kernel_name] is None) != swiglu)
    scalars = ("output1_scale_scalar", "output1_scale_gate_scalar", "output2_scale_scalar")
    if scheme == "nvfp4":
        assert [a[n] for n in scalars] == [t["output1_scale"], t["output1_gate_scale"], t["output2_scale"]]
    else:
        assert all(a[n] is None for n in scalars)


CHECKS = {"bf16": _bf16, "fp8_tensor_static": _fp8_tensor, "fp8_block": _fp8_block, "nvfp4": _fp4, "mxfp4": _fp4,
          "mxfp4_a8": _fp4}


# Construction errors and the lazy import -------------------------------------------------------------
def test_experts_refuse_weights_converted_for_another_backend() -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=128, intermediate_size=128)
    weights = canonical_kernel_weights(random_weights(config, seed=0), config, backend="reference")
    qc = oracle_for(config).make_quant_config(config, weights)
    for cls, backend in ((FlashInferCutlassExperts, FIC), (FlashInferTrtllmExperts, FIT)):
        with pytest.raises(WeightError, match=f"weights: expected weights converted for '{backend}', "
                                              f"got backend 'reference' layout 'canonical'"):
            cls(config, qc, weights)


@pytest.mark.parametrize("case", [CASES[7], CASES[13]], ids=["cutlass-padded-h", "trtllm-routed"])
def test_routed_experts_refuse_mismatched_inputs(fake_flashinfer: Any, case: Case) -> None:
    """Checked before the kernel sees them, against the caller's H (not the padded H')."""
    r = run(fake_flashinfer, case)
    assert r.layer.kernel is not None
    experts = r.layer.kernel.experts
    fake_flashinfer.calls.clear()
    ids, w = r.topk_ids, r.topk_weights
    with pytest.raises(InputError, match=r"expert_num_tokens: expected None \(flashinfer_\w+ takes the standard"):
        experts.apply(r.hidden, w, ids, expert_num_tokens=torch.zeros(8, dtype=torch.int32))
    bad = _pad(r, r.hidden) if r.h_pad != case.h else r.hidden[:, :-1]
    with pytest.raises(InputError, match=rf"hidden: expected shape \[T, {case.h}\], got shape \[{TOKENS}, {bad.shape[1]}\]"):
        experts.apply(bad, w, ids)
    with pytest.raises(InputError, match=rf"topk_ids: expected shape \[{TOKENS}, 2\], got shape \[{TOKENS}, 1\]"):
        experts.apply(r.hidden, w, ids[:, :1])
    with pytest.raises(InputError, match="topk_weights: expected dtype float32/bfloat16/float16, got dtype int64"):
        experts.apply(r.hidden, ids.long(), ids)
    assert fake_flashinfer.calls == []


def test_calling_without_flashinfer_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "flashinfer", None)
    monkeypatch.setitem(sys.modules, "flashinfer.fused_moe", None)
    from moe_oracle_cuda.flashinfer_api import fused_moe_module

    with pytest.raises(ImportError, match=r"the FlashInfer MoE \(flashinfer_cutlass, flashinfer_trtllm\) backend needs "
                                          r"flashinfer \(pip install flashinfer-python\): ModuleNotFoundError"):
        fused_moe_module()


@pytest.mark.skipif(importlib.util.find_spec("flashinfer") is None, reason="flashinfer not installed")
def test_fake_signatures_match_the_installed_flashinfer(fake_tables: Any) -> None:
    import flashinfer.fused_moe as fm

    signatures, enums = fake_tables
    for name, (required, optional) in signatures.items():
        params = inspect.signature(getattr(fm, name)).parameters.values()
        assert tuple(p.name for p in params if p.default is inspect.Parameter.empty) == required, name
        assert tuple(p.name for p in params if p.default is not inspect.Parameter.empty) == optional, name
    for enum_name, members in enums.items():
        for member, value in members.items():
            assert int(getattr(getattr(fm, enum_name), member)) == value, (enum_name, member)


@pytest.mark.parametrize("case", [c for c in CASES if c.scheme in ("fp8_tensor_static", "nvfp4", "mxfp4")],
                         ids=[c.id for c in CASES if c.scheme in ("fp8_tensor_static", "nvfp4", "mxfp4")])
def test_quant_config_of_converted_weights_field_by_field(fake_flashinfer: Any, case: Case) -> None:
    r = run(fake_flashinfer, case)
    qc, t, scheme = r.layer.kernel.experts.quant_config, r.t, r.config.scheme  # type: ignore[union-attr]
    assert qc.scheme == scheme
    for desc, name in ((qc.w13, "w13"), (qc.w2, "w2")):
        assert desc.key == scheme.weight
        assert desc.scale is t[f"{name}_scale"]
        assert desc.zero_point is None
        assert desc.global_scale is t.get(f"{name}_global_scale")
        assert desc.bias is t.get(f"{name}_bias")
    for desc, name in ((qc.a13, "a13_scale"), (qc.a2, "a2_scale")):
        assert desc.key == scheme.activation
        assert desc.scale is t.get(name)
        assert desc.zero_point is None and desc.global_scale is None and desc.bias is None
    assert (qc.swiglu_alpha, qc.swiglu_limit) == (r.config.swiglu_alpha, r.config.swiglu_limit)

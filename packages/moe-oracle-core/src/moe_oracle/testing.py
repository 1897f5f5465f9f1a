"""Shared test helpers for every backend's tests: the tolerance table, a verbose ``assert_close``,
random canonical weights and inputs, the reference output, and an independent dense MoE.

Shape letters: T tokens, H hidden size, K top-k, E experts (global), E_l local experts,
I intermediate size per partition, N rows of w13 (2*I gated, I otherwise).

A backend test reads::

    weights = random_weights(config, seed=0)
    hidden, logits = random_inputs(config, num_tokens=7, seed=1)
    topk_weights, topk_ids = route(logits, config, score_correction_bias=weights.score_correction_bias)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    assert_close(backend_output, expected, config=config, name="triton")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.config.quant import QuantScheme
from moe_oracle.kernel.weights import CanonicalWeights, canonical_kernel_weights

# Tolerances -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """Two bounds, both must hold: every element ``|actual - expected| <= atol + rtol * |expected|``,
    and the relative RMS error ``||actual - expected|| / ||expected|| <= rms``. The elementwise bound
    is sized for rare large deviations (a quantized activation one step away); the RMS bound is
    tight and catches a systematic error that stays under the elementwise one. ``why`` says where
    the error comes from.

    ``relative=True`` (every row of the table) makes ``atol`` a fraction of the output's scale, the
    RMS of ``expected``: an error grows with the output (``routed_scaling_factor=2.5``, one expert per
    token), so an absolute bound would fail correct kernels on large outputs and pass broken ones
    on small outputs. ``relative=False`` (the default for a hand-written tolerance) keeps it absolute."""

    atol: float
    rtol: float
    rms: float
    why: str = ""
    relative: bool = False

    def atol_for(self, expected_rms: float) -> float:
        """The elementwise absolute bound for an expected output of RMS ``expected_rms``."""
        return self.atol * expected_rms if self.relative else self.atol

    def __str__(self) -> str:
        atol = f"{self.atol:g}*rms(expected)" if self.relative else f"{self.atol:g}"
        return f"atol={atol} rtol={self.rtol:g} rms={self.rms:g} ({self.why})"


# THE tolerance table: a backend's output against the float32 reference that simulates the same
# quantization. Every bound is relative to the output's scale: atol is a fraction of the RMS of the
# expected output (``Tolerance.relative``), rtol of each element, rms of the whole output's norm. Two
# rows apply to a config: its compute dtype, and what its scheme quantizes activations to; the looser
# of each bound wins. Sized at 1.5 to 3 times the worst error of a simulated kernel that keeps its
# GEMM1 output, activation, per-slot GEMM2 output and top-k sum in the compute dtype (H, I up to 512,
# top-k 1 to 8, routed_scaling_factor 1 and 2.5, silu and swigluoai, with and without biases);
# test_testing.py keeps such a kernel passing and two bugs (a dropped bias, gate and up swapped)
# failing over that grid.
DTYPE_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float32: Tolerance(1.5e-4, 1e-4, 1e-5, "fp32: only accumulation order differs; tf32 GEMMs do not pass",
                             relative=True),
    torch.float16: Tolerance(7e-3, 5e-3, 2e-3, "fp16: intermediates and output rounded to 11 bits", relative=True),
    torch.bfloat16: Tolerance(3.5e-2, 2.5e-2, 1e-2, "bf16: intermediates and output rounded to 8 bits",
                              relative=True),
}
# A kernel rounds its intermediate to the compute dtype before quantizing it, so an element can
# land one quantization step away from the reference's: rare, large deviations.
ACTIVATION_TOLERANCES: dict[str, Tolerance] = {
    "int8": Tolerance(8e-2, 6e-2, 2e-2, "int8 activations: a step is 1/127 of the row's amax", relative=True),
    "fp8_e4m3": Tolerance(2e-1, 1.5e-1, 4e-2, "fp8 activations: a step is 1/8 of the element's binade",
                          relative=True),
    "fp4_e2m1": Tolerance(3.5e-1, 2.5e-1, 6e-2, "fp4 activations: a step is up to 1/3 of the element",
                          relative=True),
}


def tolerance(dtype: torch.dtype, scheme: QuantScheme | str) -> Tolerance:
    """The tolerance for a backend computing in ``dtype`` with ``scheme``, against the reference."""
    base = DTYPE_TOLERANCES[dtype]
    key = QuantScheme.parse(scheme).activation
    if key is None:
        return base
    act = ACTIVATION_TOLERANCES[key.dtype]
    return Tolerance(max(base.atol, act.atol), max(base.rtol, act.rtol), max(base.rms, act.rms),
                     f"{base.why}; {act.why}", relative=True)


@dataclass(frozen=True)
class Comparison:
    """The outcome of ``compare``: errors, mismatch count, and the first mismatches as
    ``(index, actual, expected)``."""

    ok: bool
    max_abs: float
    max_rel: float
    rel_rms: float
    mismatches: int
    total: int
    first: tuple[tuple[tuple[int, ...], float, float], ...]
    tolerance: Tolerance
    problem: str = ""
    atol: float = math.nan  # the absolute bound applied (``tolerance.atol_for`` the expected RMS)

    def describe(self, name: str = "") -> str:
        head = f"{name}: " if name else ""
        if self.problem:
            return f"{head}{self.problem}"
        applied = f" (atol {self.atol:.3g} here)" if self.tolerance.relative else ""
        lines = [f"{head}{self.mismatches} of {self.total} elements differ beyond {self.tolerance}{applied}",
                 f"  max abs error {self.max_abs:.3e}, max rel error {self.max_rel:.3e}, "
                 f"relative RMS error {self.rel_rms:.3e} (bound {self.tolerance.rms:g})"]
        lines += [f"  at {list(index)}: actual {a:.6g}, expected {e:.6g}" for index, a, e in self.first]
        return "\n".join(lines)


def compare(actual: torch.Tensor, expected: torch.Tensor, *, config: MoEConfig | None = None,
            dtype: torch.dtype | None = None, scheme: QuantScheme | str | None = None,
            tol: Tolerance | None = None, show: int = 5) -> Comparison:
    """Compare elementwise with the table's tolerance for ``config`` (or ``dtype`` and ``scheme``).

    Both bounds of the ``Tolerance`` must hold; shapes and dtypes must match exactly; NaN anywhere
    in ``actual`` is a mismatch. A relative ``atol`` (the table's) is scaled by the RMS of
    ``expected``. ``max_rel`` is ``|actual - expected| / max(|expected|, atol)``, so tiny expected
    values do not blow it up.
    """
    tol = tol if tol is not None else _tolerance_for(config, dtype, scheme)
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return Comparison(False, math.inf, math.inf, math.inf, actual.numel(), expected.numel(), (), tol,
                          f"shape {list(actual.shape)} dtype {actual.dtype} vs expected shape "
                          f"{list(expected.shape)} dtype {expected.dtype}")
    a, e = actual.detach().float().cpu(), expected.detach().float().cpu()
    expected_rms = float(e.pow(2).mean().sqrt()) if e.numel() else 0.0
    atol = tol.atol_for(expected_rms)
    diff = (a - e).abs()
    bad = ~(diff <= atol + tol.rtol * e.abs())              # NaN compares False, so it is bad
    rel = diff / e.abs().clamp_min(atol if atol > 0 else max(tol.atol, 1e-30))  # all-zero expected: the table's atol
    first = tuple((tuple(i), float(a[tuple(i)]), float(e[tuple(i)])) for i in bad.nonzero()[:show].tolist())
    count = int(bad.sum())
    rel_rms = _relative_rms(a, e)
    return Comparison(count == 0 and rel_rms <= tol.rms, _nanmax(diff), _nanmax(rel), rel_rms, count, a.numel(),
                      first, tol, atol=atol)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, config: MoEConfig | None = None,
                 dtype: torch.dtype | None = None, scheme: QuantScheme | str | None = None,
                 tol: Tolerance | None = None, name: str = "") -> None:
    """``compare``, raising ``AssertionError`` with max abs/rel error, the mismatch count and the
    first mismatching indices."""
    result = compare(actual, expected, config=config, dtype=dtype, scheme=scheme, tol=tol)
    if not result.ok:
        raise AssertionError(result.describe(name))


def _tolerance_for(config: MoEConfig | None, dtype: torch.dtype | None,
                   scheme: QuantScheme | str | None) -> Tolerance:
    if config is not None:
        if dtype is not None or scheme is not None:
            raise TypeError("compare: pass config, or dtype and scheme, not both")
        return tolerance(config.dtype, config.scheme)
    if dtype is None or scheme is None:
        raise TypeError("compare: pass config=..., or both dtype=... and scheme=..., or tol=...")
    return tolerance(dtype, scheme)


def _relative_rms(a: torch.Tensor, e: torch.Tensor) -> float:
    """``||a - e|| / ||e||``; 0 for two empty tensors, NaN if ``a`` has NaN, inf if only ``e`` is zero."""
    err = float(torch.linalg.vector_norm(a - e))
    if err == 0.0 or math.isnan(err):
        return err
    norm = float(torch.linalg.vector_norm(e))
    return math.inf if norm == 0.0 else err / norm


def _nanmax(t: torch.Tensor) -> float:
    if t.numel() == 0:
        return 0.0
    return math.nan if bool(t.isnan().any()) else float(t.max())


# Random weights and inputs ----------------------------------------------------------------------
# Weights ~ N(0, 1/fan_in) so every GEMM output of N(0, 1) inputs is O(1); biases ~ N(0, 0.5^2)
# so a dropped bias fails every tolerance; the score-correction bias is small like DeepSeek-V3's.
_BIAS_STD = 0.5
_SCORE_BIAS_STD = 0.1
_CALIBRATION_TOKENS = 64


def random_weights(config: MoEConfig, *, seed: int, device: torch.device | str = "cpu") -> CanonicalWeights:
    """Random canonical weights for ``config``'s local shard, quantized by its scheme.

    Includes biases when ``config.has_bias``, static activation scales (calibrated on
    ``random_inputs``-like tokens) when the scheme takes them, and the score-correction bias when
    the router uses one; the result passes ``moe_oracle.kernel.canonical.validate_canonical``.
    """
    from moe_oracle.quant import quantize_weights, static_activation_scale

    g = torch.Generator().manual_seed(seed)
    e, n, i, h = config.num_local_experts, config.w13_rows, config.intermediate_size_per_partition, config.hidden_size
    scheme = config.scheme
    w13 = torch.randn(e, n, h, generator=g) / math.sqrt(h)                     # [E_l, N, H]
    w2 = torch.randn(e, h, i, generator=g) / math.sqrt(i)                      # [E_l, H, I]
    tensors: dict[str, torch.Tensor] = {}
    for name, w in (("w13", w13), ("w2", w2)):
        if scheme.weight is None:
            tensors[name] = w.to(config.dtype)
            continue
        q = quantize_weights(scheme, w)
        tensors[name] = q.data
        for field, t in (("scale", q.scale), ("zero_point", q.zero_point), ("global_scale", q.global_scale)):
            if t is not None:
                tensors[f"{name}_{field}"] = t
    if config.has_bias:
        tensors["w13_bias"] = (torch.randn(e, n, generator=g) * _BIAS_STD).to(config.dtype)
        tensors["w2_bias"] = (torch.randn(e, h, generator=g) * _BIAS_STD).to(config.dtype)
    if config.routing.score_correction_bias:
        tensors["score_correction_bias"] = torch.randn(config.num_experts, generator=g) * _SCORE_BIAS_STD
    key = scheme.activation
    if key is not None and (key.static or key.global_scale):
        x = torch.randn(_CALIBRATION_TOKENS, h, generator=g).to(config.dtype).float()
        tensors["a13_scale"] = static_activation_scale(scheme, x)
        tensors["a2_scale"] = static_activation_scale(scheme, _calibration_activations(config, tensors, x))
    return CanonicalWeights(**{name: t.to(device) for name, t in tensors.items()})


def _calibration_activations(config: MoEConfig, tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """GEMM2 inputs of every local expert on calibration tokens ``x`` ``[M, H]``: ``[E_l * M, I]``."""
    w13 = _dequantized_all(config, tensors, "w13")                            # [E_l, N, H]
    h1 = torch.einsum("mh,enh->emn", x, w13)                                   # [E_l, M, N]
    if "w13_bias" in tensors:
        h1 = h1 + tensors["w13_bias"].float()[:, None, :]
    return _dense_activation(config, h1).reshape(-1, config.intermediate_size_per_partition)


def random_inputs(config: MoEConfig, num_tokens: int, *, seed: int,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``hidden`` ``[T, H]`` ~ N(0, 1) in ``config.dtype`` and ``router_logits`` ``[T, E]`` ~ N(0, 1).

    The logits are float32 so that ties (which backends routing inside their kernels may break
    differently) practically never occur.
    """
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(num_tokens, config.hidden_size, generator=g).to(config.dtype)
    logits = torch.randn(num_tokens, config.num_experts, generator=g)
    return hidden.to(device), logits.to(device)


# Reference and dense outputs --------------------------------------------------------------------
def reference_moe(config: MoEConfig, weights: CanonicalWeights, hidden: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor, *, expert_map: torch.Tensor | None = None) -> torch.Tensor:
    """``ReferenceExperts`` on canonical ``weights``: ``[T, H]`` in ``hidden.dtype``."""
    from moe_oracle.backends.reference.experts import ReferenceExperts
    from moe_oracle.oracle.schemes import oracle_for

    kernel_weights = canonical_kernel_weights(weights, config, backend="reference")
    quant_config = oracle_for(config).make_quant_config(config, kernel_weights)
    experts = ReferenceExperts(config, quant_config, kernel_weights)
    return experts.apply(hidden, topk_weights, topk_ids, expert_map=expert_map)


def served_reference_moe(config: MoEConfig, served_scheme: str, weights: CanonicalWeights, hidden: torch.Tensor,
                         topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
                         expert_map: torch.Tensor | None = None) -> tuple[torch.Tensor, MoEConfig]:
    """The reference for a backend that serves ``config`` at a higher activation precision
    (``Selection.served_scheme``): ``(output [T, H], the config to take the tolerance from)``.

    A parseable served scheme (``mxfp4`` for ``mxfp4_a8``, ``int4_w4a16`` for ``w4a8_int8``) runs the
    reference on the same quantized weights without the activation scales; a weight-only variant
    with no scheme name of its own (``nvfp4_a16``, ``fp8_block_a16``) runs it on the weights
    dequantized to ``config.dtype``, unquantized activations.
    """
    from moe_oracle.config.moe import dtype_name
    from moe_oracle.errors import ConfigError
    from moe_oracle.quant import dequantize_weights

    tensors = {k: v for k, v in weights.items() if k not in ("a13_scale", "a2_scale")}
    try:
        QuantScheme.parse(served_scheme)
        parseable = True
    except ConfigError:
        parseable = False
    if parseable:
        served = config.replace(quant=served_scheme)
    else:
        served = config.replace(quant=dtype_name(config.dtype))
        for name in ("w13", "w2"):
            dense = dequantize_weights(config.scheme, tensors.pop(name), scale=tensors.pop(f"{name}_scale", None),
                                       zero_point=tensors.pop(f"{name}_zero_point", None),
                                       global_scale=tensors.pop(f"{name}_global_scale", None))
            tensors[name] = dense.to(config.dtype)
    out = reference_moe(served, CanonicalWeights(**tensors), hidden, topk_weights, topk_ids, expert_map=expert_map)
    return out, served


def dense_moe(config: MoEConfig, weights: CanonicalWeights, hidden: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, *, expert_map: torch.Tensor | None = None) -> torch.Tensor:
    """The MoE computed densely, to check the reference: ``[T, H]`` in ``hidden.dtype``.

    Every token goes through every local expert at once (all weights dequantized together), and
    a dense ``[T, E_l]`` routing matrix built from the top-k weights selects and weights the results.
    It shares only the quantization formats with the reference: activations are fake-quantized
    over the same rows a kernel would quantize (all T tokens before GEMM1, the routed
    (token, expert) pairs before GEMM2), gathered here in token order rather than expert order.
    """
    from moe_oracle.quant import fake_quantize_activation

    scheme = config.scheme
    t = hidden.shape[0]
    e = config.num_local_experts
    tensors = dict(weights.items())
    ids = topk_ids.long()                                                      # [T, K]
    local = ids if expert_map is None else expert_map.long()[ids]              # [T, K], -1 elsewhere
    here = local >= 0
    slot = local.clamp(min=0)
    zeros = torch.zeros(t, e, device=hidden.device)
    routing = zeros.scatter_add(1, slot, torch.where(here, topk_weights.float(), 0.0))  # [T, E_l]
    routed = zeros.scatter_add(1, slot, here.float()) > 0                     # [T, E_l] bool

    def quantize(x: torch.Tensor, scale_name: str) -> torch.Tensor:
        if scheme.activation is None or x.numel() == 0:
            return x
        return fake_quantize_activation(scheme, x, scale=tensors.get(scale_name))

    x = hidden.float()                                                         # [T, H]
    if config.apply_router_weight_on_input:
        x = x * topk_weights.float().sum(dim=1, keepdim=True)                 # top_k == 1: its weight
    x = quantize(x, "a13_scale")
    h1 = torch.einsum("th,enh->ten", x, _dequantized_all(config, tensors, "w13"))  # [T, E_l, N]
    if "w13_bias" in tensors:
        h1 = h1 + tensors["w13_bias"].float()
    act = _dense_activation(config, h1)                                        # [T, E_l, I]
    act[routed] = quantize(act[routed], "a2_scale")                            # [R, I], token order
    y = torch.einsum("tei,ehi->teh", act, _dequantized_all(config, tensors, "w2"))  # [T, E_l, H]
    if "w2_bias" in tensors:
        y = y + tensors["w2_bias"].float()
    coefficient = routed.float() if config.apply_router_weight_on_input else routing  # [T, E_l]
    out = torch.einsum("te,teh->th", coefficient, y)                           # [T, H]
    return out.to(hidden.dtype)


def _dequantized_all(config: MoEConfig, tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Every local expert's ``w13`` ``[E_l, N, H]`` or ``w2`` ``[E_l, H, I]`` in float32."""
    from moe_oracle.quant import dequantize_weights

    return dequantize_weights(config.scheme, tensors[name], scale=tensors.get(f"{name}_scale"),
                              zero_point=tensors.get(f"{name}_zero_point"),
                              global_scale=tensors.get(f"{name}_global_scale"))


def _dense_activation(config: MoEConfig, h: torch.Tensor) -> torch.Tensor:
    """``[..., N]`` -> ``[..., I]``, written from the formulas (not the reference's code)."""
    def silu(v: torch.Tensor) -> torch.Tensor:
        return v * torch.sigmoid(v)

    def gelu(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * v * (1.0 + torch.erf(v / math.sqrt(2.0)))

    if not config.is_gated:
        return {"silu": silu, "gelu": gelu, "relu2": lambda v: torch.clamp(v, min=0) ** 2}[config.activation](h)
    gate, up = h.chunk(2, dim=-1)
    limit = config.swiglu_limit
    if limit is not None:
        gate = torch.where(gate > limit, limit, gate)
        up = torch.where(up > limit, limit, torch.where(up < -limit, -limit, up))
    if config.activation == "swigluoai":
        assert config.swiglu_alpha is not None
        return gate * torch.sigmoid(gate * config.swiglu_alpha) * (up + 1.0)
    return (silu(gate) if config.activation == "silu" else gelu(gate)) * up


# What a vendor's tests need beyond moe_oracle.plugin: routing, the oracle's own conversion path,
# the reference spec and report types.
from moe_oracle.backends.reference.spec import REFERENCE_SPEC  # noqa: E402
from moe_oracle.kernel.modular import FusedMoEKernel  # noqa: E402
from moe_oracle.oracle.report import SelectionReport  # noqa: E402
from moe_oracle.oracle.schemes import oracle_for  # noqa: E402
from moe_oracle.router import route  # noqa: E402


def assert_graph_replay_equals_eager(run: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                                     new_inputs: Sequence[torch.Tensor]) -> None:
    """``run(*inputs)`` captured in a CUDA graph (after one eager call that compiles), replayed on
    ``new_inputs`` copied into the captured tensors, equals ``run(*new_inputs)`` in eager mode bit for bit."""
    run(*inputs)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run(*inputs)
    for captured, new in zip(inputs, new_inputs, strict=True):
        captured.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    eager = run(*new_inputs)
    assert torch.equal(out, eager), f"replay differs from eager: max {float((out.float() - eager.float()).abs().max())}"


def build_kernel(backend: str, config: MoEConfig, weights: CanonicalWeights) -> FusedMoEKernel:
    """Convert, make the quant config and assemble ``backend`` exactly as a layer does."""
    oracle = oracle_for(config)
    converted = oracle.convert_to_kernel_format(backend, config, weights)
    quant = oracle.make_quant_config(converted.config, converted)
    return oracle.make_kernel(backend, config, quant, converted)


__all__ = [
    "ACTIVATION_TOLERANCES", "REFERENCE_SPEC", "Comparison", "DTYPE_TOLERANCES", "FusedMoEKernel", "SelectionReport",
    "Tolerance", "assert_close", "assert_graph_replay_equals_eager", "build_kernel", "canonical_kernel_weights",
    "compare", "dense_moe", "oracle_for", "random_inputs", "random_weights", "reference_moe", "route", "tolerance",
]

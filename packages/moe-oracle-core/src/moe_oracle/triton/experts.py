"""``TritonExperts`` (standard format) and ``BatchedTritonExperts`` (batched format).

Both take canonical ``KernelWeights`` (w13 ``[E, 2*I, H]`` gate rows first, w2 ``[E, H, I]``,
scales as in DESIGN.md's table) and run, per forward, with no host synchronisation:

    align (standard only) -> quantize input (quantized-activation schemes) -> GEMM1 + activation
    (+ fused fp8 quantization) -> [quantize] -> GEMM2 + router weight -> top-k sum (standard only)

Kernel modules import ``triton``; this module imports them on first use, so it loads without it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from moe_oracle.kernel.inputs import check_routed_inputs
from moe_oracle.kernel.modular import ExpertsModular

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.kernel.quant_config import QuantConfig
    from moe_oracle.kernel.weights import KernelWeights
    from moe_oracle.triton.align import AlignedRouting, DirectRouting
    from moe_oracle.triton.configs import LayerConfigs, TritonConfig


@dataclass(frozen=True)
class _Plan:
    """How a scheme maps onto the kernels' quantization codes (see ``gemm.py`` and ``dequant.py``)."""

    a_quant: int = 0
    b_quant: int = 0
    act_dtype: torch.dtype | None = None  # quantized activation dtype, None when unquantized
    w_format: int = 0  # dequant.W_*: weights dequantized in registers (mixed input); 0: as stored
    w_scale: int = 0  # dequant.S_*: group scales applied in the loop
    w_scale_n_div: int = 1  # output rows sharing one scale row (128 for fp8 128x128 blocks)
    b_offset: float = 0.0
    group: int = 128
    global_scale: bool = False  # nvfp4: per-expert global weight scale in the epilogue
    fuse_group_quant: bool = False  # GEMM1 writes fp8 per-128-column groups (fp8_block)
    fuse_static_quant: bool = False  # GEMM1 writes fp8 with the static a2 scale
    served: str | None = None  # the scheme run when it is not the config's (higher activation precision)


def fp8_mma_supported(device: torch.device) -> bool:
    """Whether fp8 activations can feed the MMA here: CUDA capability >= 8.9, ROCm gfx9/gfx12, and
    the interpreter (CPU). Elsewhere fp8 checkpoints run weight-only (``served_scheme``)."""
    if device.type != "cuda":
        return True
    if torch.version.hip:
        from moe_oracle.triton.spec import FP8_ROCM_ARCHS

        return torch.cuda.get_device_properties(device).gcnArchName.startswith(FP8_ROCM_ARCHS)
    return torch.cuda.get_device_capability(device) >= (8, 9)


def _plan(config: MoEConfig, *, fp8_mma: bool = True) -> _Plan:
    from moe_oracle.triton import dequant as d
    from moe_oracle.triton import gemm as g
    from moe_oracle.triton.spec import served_scheme

    s = config.scheme
    name = s.base_name
    if s.weight is None:
        return _Plan()
    fp8, i8 = torch.float8_e4m3fn, torch.int8
    served = served_scheme(config, fp8_mma=fp8_mma)
    if name.startswith("fp8") and not fp8_mma:  # fp8 weights decoded in registers, bf16/fp16 activations
        if name == "fp8_block":
            return _Plan(0, g.B_NONE, w_format=d.W_E4M3, w_scale=d.S_F32, w_scale_n_div=s.weight.granularity.shape[0],
                         group=s.weight.granularity.shape[1], served=served)
        return _Plan(0, g.B_TENSOR if name.startswith("fp8_tensor") else g.B_CHANNEL, w_format=d.W_E4M3,
                     served=served)
    if name == "fp8_tensor":
        return _Plan(g.A_TENSOR, g.B_TENSOR, fp8)
    if name == "fp8_tensor_static":
        return _Plan(g.A_TENSOR, g.B_TENSOR, fp8, fuse_static_quant=True)
    if name == "fp8_channel":
        return _Plan(g.A_TOKEN, g.B_CHANNEL, fp8)
    if name == "fp8_block":
        return _Plan(g.A_GROUP, g.B_BLOCK, fp8, group=s.weight.granularity.shape[1], fuse_group_quant=True)
    if name == "int8_w8a8":
        return _Plan(g.A_TOKEN, g.B_CHANNEL, i8)
    if name == "int8_w8a16":
        return _Plan(0, g.B_CHANNEL)
    if name in ("int4_w4a16", "int8_w8a16_group", "w4a8_int8", "w4a8_fp8"):
        int4 = name != "int8_w8a16_group"
        zp = not s.weight.symmetric
        offset = (0.0 if zp else -8.0) if int4 else (128.0 if zp else 0.0)
        return _Plan(0, g.B_NONE, w_format=d.W_INT4 if int4 else d.W_INT8, w_scale=d.S_F32, b_offset=offset,
                     group=s.group_size or 128, served=served)
    if name in ("mxfp4", "mxfp4_a8"):
        return _Plan(0, g.B_NONE, w_format=d.W_E2M1, w_scale=d.S_E8M0, group=32, served=served)
    if name == "nvfp4":
        return _Plan(0, g.B_NONE, w_format=d.W_E2M1, w_scale=d.S_E4M3, group=16, global_scale=True, served=served)
    raise ValueError(f"scheme: the Triton experts do not run {s.name}")


@functools.cache
def _device_name(device: torch.device) -> str:
    """The name tuned files are keyed by (``cpu`` in the interpreter)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


class _TritonBase(ExpertsModular):
    backend: ClassVar[str]  # the registered name whose (canonical) weights these experts take

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        weights.require(self.backend, "canonical")
        super().__init__(config, quant_config, weights)
        self.plan = _plan(config, fp8_mma=fp8_mma_supported(weights.w13.device))
        from moe_oracle.triton.gemm import ACTIVATION_CODES

        self.activation = ACTIVATION_CODES[config.activation]
        self.swiglu_alpha = config.swiglu_alpha or 1.0
        self.swiglu_limit = config.swiglu_limit or 0.0
        self.configs_override: LayerConfigs | None = None
        self._configs: dict[tuple[int, torch.device], LayerConfigs] = {}

    def configs_for(self, num_tokens: int, device: torch.device) -> LayerConfigs:
        """Launch configs for ``num_tokens`` (``configs_override`` wins: the tuner sets it).
        Memoized per token count, so the per-call path does no file or metadata lookups."""
        from moe_oracle.triton.configs import get_configs

        if self.configs_override is not None:
            return self._fitted(self.configs_override)
        key = (num_tokens, device)
        if key not in self._configs:
            self._configs[key] = self._fitted(get_configs(self.config, num_tokens, _device_name(device)))
        return self._configs[key]

    def _fitted(self, cfg: LayerConfigs) -> LayerConfigs:
        return type(cfg)(*(self._fit(c, gemm) for c, gemm in ((cfg.w13, "w13"), (cfg.w2, "w2"))))

    def _fit(self, cfg: TritonConfig, gemm: str) -> TritonConfig:
        """What the scheme requires of a tile: BLOCK_K within one weight group or block."""
        from moe_oracle.triton import gemm as g

        changes = {}
        if self.plan.b_quant == g.B_BLOCK and self.plan.group % cfg.block_k:
            changes["block_k"] = min(cfg.block_k, self.plan.group)
        return type(cfg)(**{**cfg.to_dict(), **changes}) if changes else cfg

    def _quantize(self, x: torch.Tensor, static: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Quantize GEMM input rows ``x`` [R, C] per the scheme: (values, scales)."""
        from moe_oracle.triton import gemm as g
        from moe_oracle.triton.quant import quantize_per_token_group, quantize_rows

        p = self.plan
        if p.act_dtype is None:
            return x, None
        if p.a_quant == g.A_GROUP:
            return quantize_per_token_group(x, p.group, p.act_dtype)
        return quantize_rows(x, per_token=p.a_quant == g.A_TOKEN, dtype=p.act_dtype, static_scale=static)

    def _run(self, x: torch.Tensor, *, r13: AlignedRouting | DirectRouting | None,
             r2: AlignedRouting | DirectRouting | None,
             expert_num_tokens: torch.Tensor | None,
             cfg: LayerConfigs, rows_out: int, a_row_div: int, topk_weights: torch.Tensor | None,
             on_input: bool) -> torch.Tensor:
        """Both GEMMs; returns GEMM2's [S, rows_out, H] (S = split_k of w2)."""
        from moe_oracle.triton import gemm as g

        p = self.plan
        w, qc = self.weights, self.quant_config
        i = self.config.intermediate_size_per_partition
        h = self.config.hidden_size
        a13_static = qc.a13.scale if p.act_dtype is not None and self.config.scheme.activation is not None and \
            self.config.scheme.activation.static else None
        a1, a1_scale = self._quantize(x, a13_static)
        # GEMM1 quantizes its own output when its tiles hold whole 128-column groups; narrower
        # tiles (more programs for small M) leave it to the group quantization kernel.
        fuse_group = p.fuse_group_quant and cfg.w13.block_n % p.group == 0
        gemm = functools.partial(g.moe_gemm, b_quant=p.b_quant, w_format=p.w_format, w_scale=p.w_scale,
                                 w_scale_n_div=p.w_scale_n_div, b_offset=p.b_offset,
                                 group_n=p.group, group_k=p.group, a_quant=p.a_quant)
        if fuse_group or p.fuse_static_quant:
            inter = torch.empty((1, rows_out, i), dtype=p.act_dtype, device=x.device)
        elif p.a_quant == g.A_TENSOR:  # the dynamic per-tensor amax reads every row: unwritten ones must be 0
            inter = torch.zeros((1, rows_out, i), dtype=x.dtype, device=x.device)
        else:
            inter = torch.empty((1, rows_out, i), dtype=x.dtype, device=x.device)
        inter_scale = None
        out_quant = g.OUT_NONE
        if fuse_group:
            inter_scale = torch.empty((rows_out, -(-i // p.group)), dtype=torch.float32, device=x.device)
            out_quant = g.OUT_FP8_GROUP
        elif p.fuse_static_quant:
            if qc.a2.scale is None:
                raise ValueError(f"quant_config.a2.scale: scheme {self.config.scheme.name} needs the static a2 scale, got None")
            inter_scale = qc.a2.scale.reshape(1).to(torch.float32)
            out_quant = g.OUT_FP8_STATIC
        gemm(
            a1, w.w13, inter, config=cfg.w13, n=i, routing=r13, expert_num_tokens=expert_num_tokens,
            a_row_div=a_row_div, gated=bool(self.config.is_gated), activation=self.activation,
            swiglu_alpha=self.swiglu_alpha, swiglu_limit=self.swiglu_limit, a_scale=a1_scale,
            b_scale=w.get("w13_scale"), b_zero_point=w.get("w13_zero_point"), bias=w.get("w13_bias"),
            b_global_scale=w.get("w13_global_scale") if p.global_scale else None,
            topk_weights=topk_weights if on_input else None, weight_before_bias=True,
            out_quant=out_quant, out_scale=inter_scale, out_group=p.group)
        a2 = inter[0]
        a2_scale = inter_scale
        if p.act_dtype is not None and not (fuse_group or p.fuse_static_quant):
            a2, a2_scale = self._quantize(a2, None)
        split = cfg.w2.split_k
        out_dtype = torch.float32 if split > 1 else x.dtype
        out = torch.empty((split, rows_out, h), dtype=out_dtype, device=x.device)
        gemm(
            a2, w.w2, out, config=cfg.w2, n=h, routing=r2, expert_num_tokens=expert_num_tokens, a_row_div=1,
            a_scale=a2_scale, b_scale=w.get("w2_scale"), b_zero_point=w.get("w2_zero_point"),
            b_global_scale=w.get("w2_global_scale") if p.global_scale else None,
            bias=w.get("w2_bias"), topk_weights=None if on_input else topk_weights, weight_before_bias=False)
        return out

    def workspace_shapes(self, num_tokens: int) -> dict[str, tuple[int, ...]]:
        k = self.config.top_k
        i, h = self.config.intermediate_size_per_partition, self.config.hidden_size
        return {"intermediate": (num_tokens * k, i), "expert_out": (num_tokens * k, h)}


class TritonExperts(_TritonBase):
    """Triton fused MoE over the standard format: ``hidden`` [T, H] with routed pairs [T, K]."""

    activation_format: ClassVar[str] = "standard"
    backend: ClassVar[str] = "triton"

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` in ``hidden.dtype``: sum over k of topk_weights[t, k] * expert_{ids[t, k]}(hidden[t]).

        hidden : [T, H] compute dtype. topk_weights : [T, K] float32. topk_ids : [T, K] int32/int64
        global ids. expert_map : [E] int32, global -> local id, -1 for experts of other ranks.
        """
        from moe_oracle.triton.align import DirectRouting, moe_align
        from moe_oracle.triton.gemm import moe_sum

        check_routed_inputs(self.config, hidden, topk_weights, topk_ids, expert_map=expert_map,
                            expert_num_tokens=expert_num_tokens, who="the triton experts", check_values=False)
        t, k = topk_ids.shape
        cfg = self.configs_for(t, hidden.device)
        e = self.config.num_local_experts
        ids = topk_ids if topk_ids.dtype == torch.int32 else topk_ids.to(torch.int32)
        r13: AlignedRouting | DirectRouting
        r2: AlignedRouting | DirectRouting
        if t == 1:  # one token: its K experts are distinct, nothing to group
            r13 = r2 = DirectRouting(ids.reshape(-1), expert_map, k)
        else:
            r13 = moe_align(ids, e, cfg.w13.block_m, expert_map=expert_map)
            r2 = r13 if cfg.w2.block_m == cfg.w13.block_m else moe_align(ids, e, cfg.w2.block_m,
                                                                          expert_map=expert_map)
        weights = topk_weights.reshape(-1).to(torch.float32)
        out2 = self._run(hidden.contiguous(), r13=r13, r2=r2, expert_num_tokens=None, cfg=cfg,
                         rows_out=t * k, a_row_div=k, topk_weights=weights,
                         on_input=self.config.apply_router_weight_on_input)
        out = torch.empty_like(hidden)
        moe_sum(out2, out, ids, expert_map)
        return out


class BatchedTritonExperts(_TritonBase):
    """Triton fused MoE over the batched format: ``hidden`` [E_l, max_tokens, H], row j of expert
    e valid when j < expert_num_tokens[e]. Returns [E_l, max_tokens, H] expert outputs without the
    router weight (the batched finalize applies it and combines)."""

    activation_format: ClassVar[str] = "batched"
    backend: ClassVar[str] = "batched_triton"

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """hidden : [E_l, max_tokens, H]; expert_num_tokens : [E_l] int32; returns [E_l, max_tokens, H]."""
        if expert_num_tokens is None:
            raise ValueError("expert_num_tokens: the batched format needs the [E_l] valid-row counts, got None")
        e = self.config.num_local_experts
        if hidden.dim() != 3 or hidden.shape[0] != e:
            raise ValueError(f"hidden: expected shape [E_l={e}, max_tokens, H], got {list(hidden.shape)}")
        _, max_tokens, h = hidden.shape
        cfg = self.configs_for(max_tokens * e // max(1, self.config.top_k), hidden.device)
        if cfg.w2.split_k != 1:
            from moe_oracle.triton.configs import TritonConfig

            cfg = type(cfg)(cfg.w13, TritonConfig(**{**cfg.w2.to_dict(), "split_k": 1}))
        x = hidden.reshape(e * max_tokens, h)
        if not x.is_contiguous():
            x = x.contiguous()
        counts = expert_num_tokens.to(torch.int32)
        out = self._run(x, r13=None, r2=None, expert_num_tokens=counts, cfg=cfg, rows_out=e * max_tokens,
                        a_row_div=1, topk_weights=None, on_input=False)
        return out[0].view(e, max_tokens, h)

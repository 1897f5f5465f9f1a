"""``MoELayer``: selection at construction, one conversion per canonical load, checked forwards.

    layer = MoELayer(config)                       # selects now; an unusable config fails here
    layer.load_weights(w13=..., w2=..., ...)       # canonical tensors -> validated -> converted once
    out = layer(hidden_states, router_logits)      # [T, H], [T, E] -> [T, H]

The layer keeps the canonical tensors it was given: ``process_weights()`` converts them only if
the current canonical load has not been converted yet, and a new ``load_weights`` (the weight
reload of RL trainers) converts the new canonical tensors, never the converted ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.errors import ConfigError, InputError
from moe_oracle.kernel.canonical import validate_canonical
from moe_oracle.kernel.inputs import FLOAT_DTYPES, INDEX_DTYPES, check_tensor
from moe_oracle.kernel.modular import FusedMoEKernel, PrepareFinalize
from moe_oracle.kernel.weights import CanonicalWeights, KernelWeights
from moe_oracle.oracle.dispatch import BucketKernels, build_bucket_kernels, convert_primary
from moe_oracle.oracle.report import Selection
from moe_oracle.oracle.schemes import oracle_for
from moe_oracle.platform import Platform

_load_ids = itertools.count(1)


def _describe(t: torch.Tensor) -> str:
    return f"shape {list(t.shape)} dtype {str(t.dtype).removeprefix('torch.')} on {t.device}"


def _capturing() -> bool:
    """Inside CUDA-graph capture, value checks (which synchronize) are skipped."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class MoELayer(torch.nn.Module):
    """One fused MoE layer on the backend the oracle selects (or ``backend=`` forces)."""

    def __init__(self, config: MoEConfig, backend: str | None = None, platform: Platform | None = None, *,
                 exclude: str | Iterable[str] | None = None, prefer: str | Iterable[str] | None = None,
                 prepare_finalize: PrepareFinalize | None = None, strict: bool | None = None,
                 policy: str | None = None, buckets: Iterable[int] | None = None,
                 allow_extra_memory: bool = False) -> None:
        """``prepare_finalize`` is the expert-parallel dispatcher for ``config.parallel.all2all``; the
        local one is used when it is ``None``, which only fits configs without all-to-all.

        ``policy`` (``None``: ``MOE_ORACLE_POLICY``, default ``"rules"``) and ``buckets`` make the
        plan (``Selection.plan``); each forward runs its token count's bucket, looked up on the host.
        Buckets run other weight layouts than the primary backend's only with ``allow_extra_memory``."""
        super().__init__()
        if not isinstance(config, MoEConfig):
            raise TypeError(f"config must be a MoEConfig, got {type(config).__name__}")
        if prepare_finalize is None and config.parallel.use_all2all_kernels:
            raise ConfigError("parallel.all2all", f"{config.parallel.all2all!r} dispatches tokens between ranks: pass "
                              "MoELayer(..., prepare_finalize=<an expert-parallel PrepareFinalize>); moe-oracle "
                              "ships only the local one today")
        self.prepare_finalize = prepare_finalize
        self.config = config
        self.oracle = oracle_for(config)
        self.selection: Selection = self.oracle.select_backend(config, platform, backend=backend,
                                                               exclude=exclude, prefer=prefer, strict=strict,
                                                               policy=policy, buckets=buckets,
                                                               allow_extra_memory=allow_extra_memory)
        self._buckets: BucketKernels | None = None
        self.canonical: CanonicalWeights | None = None
        self.kernel_weights: KernelWeights | None = None
        self.kernel: FusedMoEKernel | None = None
        self.conversions = 0
        self._load_id = 0
        self.expert_map: torch.Tensor | None = None

    @property
    def backend(self) -> str:
        return self.selection.backend

    def extra_repr(self) -> str:
        c = self.config
        return (f"backend={self.backend!r}, E={c.num_experts}, top_k={c.top_k}, H={c.hidden_size}, "
                f"I={c.intermediate_size}, quant={c.scheme.name}")

    # Weights -----------------------------------------------------------------------------
    def load_weights(
        self, *,
        w13: torch.Tensor, w2: torch.Tensor,
        w13_bias: torch.Tensor | None = None, w2_bias: torch.Tensor | None = None,
        w13_scale: torch.Tensor | None = None, w2_scale: torch.Tensor | None = None,
        a13_scale: torch.Tensor | None = None, a2_scale: torch.Tensor | None = None,
        w13_zero_point: torch.Tensor | None = None, w2_zero_point: torch.Tensor | None = None,
        w13_global_scale: torch.Tensor | None = None, w2_global_scale: torch.Tensor | None = None,
        score_correction_bias: torch.Tensor | None = None,
    ) -> None:
        """Take canonical tensors (layouts in DESIGN.md / ``moe_oracle.kernel.canonical``), check every
        shape and dtype against the config (``WeightError`` names the tensor, expected and got), then
        convert them once to the backend's layout. Tensors stay on the device they come on."""
        weights = CanonicalWeights(
            w13=w13, w2=w2, w13_bias=w13_bias, w2_bias=w2_bias, w13_scale=w13_scale, w2_scale=w2_scale,
            a13_scale=a13_scale, a2_scale=a2_scale, w13_zero_point=w13_zero_point, w2_zero_point=w2_zero_point,
            w13_global_scale=w13_global_scale, w2_global_scale=w2_global_scale,
            score_correction_bias=score_correction_bias,
        )
        validate_canonical(self.config, weights)
        self.canonical = weights
        self._load_id = next(_load_ids)
        self.process_weights()

    def process_weights(self) -> None:
        """Convert the current canonical load for the backend; a no-op if it is already converted."""
        if self.canonical is None:
            raise RuntimeError("process_weights() before load_weights(): there are no weights to convert")
        if self.kernel_weights is not None and self.kernel_weights.source == self._load_id:
            return
        converted = convert_primary(self.oracle, self.selection, self.config, self.canonical)
        converted = KernelWeights(backend=converted.backend, config=converted.config, tensors=converted.tensors,
                                  layout=converted.layout, source=self._load_id, extras=converted.extras)
        quant_config = self.oracle.make_quant_config(converted.config, converted)
        self.kernel = self.oracle.make_kernel(self.selection, self.config, quant_config, converted,
                                              prepare_finalize=self.prepare_finalize)
        self._buckets = build_bucket_kernels(
            self.oracle, self.selection, self.config, self.canonical, converted, self.kernel,
            lambda backend, kw: self.oracle.make_kernel(backend, self.config, self.oracle.make_quant_config(
                kw.config, kw), kw, prepare_finalize=self.prepare_finalize))
        self.kernel_weights = converted
        self.conversions += 1
        self.expert_map = self._make_expert_map(self.canonical.w13.device)

    def _make_expert_map(self, device: torch.device) -> torch.Tensor | None:
        """Global expert id -> local id on this rank, -1 elsewhere; ``None`` without expert parallelism."""
        p = self.config.parallel
        if p.ep_size == 1:
            return None
        local = self.config.num_local_experts
        expert_map = torch.full((self.config.num_experts,), -1, dtype=torch.int32, device=device)
        start = p.ep_rank * local
        expert_map[start:start + local] = torch.arange(local, dtype=torch.int32, device=device)
        return expert_map

    # Forward -----------------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        """hidden_states ``[T, H]`` (config dtype), router_logits ``[T, E]`` float -> ``[T, H]``."""
        self._ready()
        self._check_hidden(hidden_states)
        t = hidden_states.shape[0]
        kernel = self._kernel_for(t)
        e = self.config.num_experts
        check_tensor("router_logits", router_logits, (t, e), FLOAT_DTYPES, hidden_states.device)
        if not _capturing() and router_logits.numel() and not torch.isfinite(router_logits).all():
            bad = (~torch.isfinite(router_logits)).nonzero()[0].tolist()
            raise InputError("router_logits", "finite values", f"NaN or inf (first at index {bad})")
        assert self.canonical is not None
        bias = self.canonical.score_correction_bias
        if kernel.monolithic:
            out = kernel.forward_logits(hidden_states, router_logits, expert_map=self.expert_map,
                                        score_correction_bias=bias)
            return self._check_output(out, hidden_states)
        from moe_oracle.router import route

        topk_weights, topk_ids = route(router_logits, self.config, score_correction_bias=bias)
        out = kernel.forward_routed(hidden_states, topk_weights, topk_ids, expert_map=self.expert_map)
        return self._check_output(out, hidden_states)

    def forward_routed(self, hidden_states: torch.Tensor, topk_weights: torch.Tensor,
                       topk_ids: torch.Tensor) -> torch.Tensor:
        """Routing done by the caller: topk_weights ``[T, K]`` float, topk_ids ``[T, K]`` int32/int64
        global expert ids in ``[0, E)``."""
        self._ready()
        self._check_hidden(hidden_states)
        kernel = self._kernel_for(hidden_states.shape[0])
        if kernel.monolithic:
            raise InputError("forward_routed", f"a modular backend ({self.backend} routes inside its kernel)",
                             "a monolithic backend; call layer(hidden_states, router_logits)")
        t, k = hidden_states.shape[0], self.config.top_k
        check_tensor("topk_weights", topk_weights, (t, k), FLOAT_DTYPES, hidden_states.device)
        check_tensor("topk_ids", topk_ids, (t, k), INDEX_DTYPES, hidden_states.device)
        if not _capturing() and topk_ids.numel():
            lo, hi = int(topk_ids.min()), int(topk_ids.max())
            if lo < 0 or hi >= self.config.num_experts:
                raise InputError("topk_ids", f"expert ids in [0, {self.config.num_experts})",
                                 f"ids in [{lo}, {hi}]")
        # Weight values are checked where that costs no device synchronization (CPU tensors).
        if topk_weights.device.type == "cpu" and topk_weights.numel() and not torch.isfinite(topk_weights).all():
            bad = (~torch.isfinite(topk_weights)).nonzero()[0].tolist()
            raise InputError("topk_weights", "finite values", f"NaN or inf (first at index {bad})")
        out = kernel.forward_routed(hidden_states, topk_weights.float(), topk_ids, expert_map=self.expert_map)
        return self._check_output(out, hidden_states)

    def _check_output(self, out: object, hidden_states: torch.Tensor) -> torch.Tensor:
        """The experts' output must be ``[T, H]`` in the input's dtype and device: a plugin that returns
        anything else fails here, naming the backend and its package (metadata only, no synchronization)."""
        if not (isinstance(out, torch.Tensor) and out.shape == hidden_states.shape
                and out.dtype == hidden_states.dtype and out.device == hidden_states.device):
            from moe_oracle.errors import KernelOutputError

            got = _describe(out) if isinstance(out, torch.Tensor) else type(out).__name__
            raise KernelOutputError(self.backend, self.selection.spec.distribution, _describe(hidden_states), got)
        return out

    def _kernel_for(self, num_tokens: int) -> FusedMoEKernel:
        """The kernel of ``num_tokens``' bucket (a host-side lookup; no device synchronization)."""
        assert self._buckets is not None
        return self._buckets.kernel_for(num_tokens)

    def _ready(self) -> FusedMoEKernel:
        if self.kernel is None:
            raise RuntimeError("MoELayer has no weights: call load_weights(w13=..., w2=..., ...) first")
        return self.kernel

    def _check_hidden(self, hidden_states: torch.Tensor) -> None:
        assert self.canonical is not None
        h = self.config.hidden_size
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 2 or hidden_states.shape[1] != h:
            got = _describe(hidden_states) if isinstance(hidden_states, torch.Tensor) else type(hidden_states).__name__
            raise InputError("hidden_states", f"shape [T, {h}]", got)
        if hidden_states.dtype != self.config.dtype:
            raise InputError("hidden_states", f"dtype {str(self.config.dtype).removeprefix('torch.')}",
                             f"dtype {str(hidden_states.dtype).removeprefix('torch.')}")
        if hidden_states.device != self.canonical.w13.device:
            raise InputError("hidden_states", f"device {self.canonical.w13.device} (where the weights are)",
                             f"device {hidden_states.device}")

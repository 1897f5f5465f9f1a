"""``MoELayer``: selection at construction, one conversion per canonical load, checked forwards.

    layer = MoELayer(config)                       # selects now; an unusable config fails here
    layer.load_weights(w13=..., w2=..., ...)       # canonical tensors -> validated -> converted once
    out = layer(hidden_states, router_logits)      # [T, H], [T, E] -> [T, H]

Validation happens once, here (DESIGN.md, "Forward checks"): shapes, dtypes and devices on every
forward, from metadata only; values (finite logits and router weights, expert ids in range) where
``check_values`` says: on CPU tensors by default, on accelerators only when asked, never inside
CUDA-graph capture or torch.compile. The kernel and the experts below trust the layer
(``moe_oracle.kernel.inputs.checked_inputs``). A default forward on a GPU reads nothing back to the
host, so the whole ``layer(hidden, router_logits)`` can be captured in a CUDA graph; under
``torch.compile`` the layer calls its kernel through the ``moe_oracle::moe_forward`` /
``moe_oracle::moe_forward_routed`` custom ops (``moe_oracle.kernel.ops``).

Weights (DESIGN.md, "Module semantics"). After ``load_weights`` the layer owns one copy of the
weights, in its backend's layout: converted tensors that would share storage with the caller's are
copied, so a later in-place change of the caller's tensors never reaches the layer, on any backend
(reload to update), and the caller's tensors can be dropped. The canonical tensors are not kept
beside the converted ones: ``layer.canonical`` is the kernel's own tensors where its layout is
canonical, else rebuilt by the converter's exact inverse (``BackendSpec.load_inverse``) when asked
for; a backend without an inverse keeps the canonical tensors too (and says so). ``state_dict()``,
``load_state_dict()``, ``.to()``, ``copy.deepcopy`` and pickling go through that canonical form. A
``load_weights`` that fails (validation, conversion, kernel assembly) leaves the layer exactly as it
was. A reload converts the new canonical tensors, never the converted ones.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.errors import ConfigError, InputError
from moe_oracle.kernel import ops
from moe_oracle.kernel.canonical import expected_tensors, validate_canonical
from moe_oracle.kernel.inputs import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    check_finite,
    check_tensor,
    check_values_default,
    checked_inputs,
    should_check_values,
)
from moe_oracle.kernel.modular import FusedMoEKernel, PrepareFinalize
from moe_oracle.kernel.weights import TENSOR_NAMES, CanonicalWeights, KernelWeights
from moe_oracle.oracle.dispatch import BucketKernels, build_bucket_kernels, convert_primary
from moe_oracle.oracle.report import Selection
from moe_oracle.oracle.schemes import oracle_for
from moe_oracle.platform import Platform

_load_ids = itertools.count(1)
logger = logging.getLogger("moe_oracle")


def _describe(t: torch.Tensor) -> str:
    return f"shape {list(t.shape)} dtype {str(t.dtype).removeprefix('torch.')} on {t.device}"


def _distributed_prepare_finalize(config: MoEConfig, process_group: object | None) -> PrepareFinalize:
    import torch.distributed as dist

    if process_group is None and not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("parallel.all2all", f"{config.parallel.all2all!r} dispatches tokens between ranks: "
                          "initialize torch.distributed (init_process_group) first, or pass "
                          "MoELayer(..., process_group=<the expert-parallel group>) or "
                          "MoELayer(..., prepare_finalize=<an expert-parallel PrepareFinalize>)")
    from moe_oracle.distributed import make_prepare_finalize

    return make_prepare_finalize(config, process_group)


def _is_expert_parallel(prepare_finalize: PrepareFinalize | None) -> bool:
    if prepare_finalize is None:
        return False
    from moe_oracle.distributed.base import ExpertParallelPrepareFinalize

    return isinstance(prepare_finalize, ExpertParallelPrepareFinalize)


class MoELayer(torch.nn.Module):
    """One fused MoE layer on the backend the oracle selects (or ``backend=`` forces)."""

    def __init__(self, config: MoEConfig, backend: str | None = None, platform: Platform | None = None, *,
                 exclude: str | Iterable[str] | None = None, prefer: str | Iterable[str] | None = None,
                 prepare_finalize: PrepareFinalize | None = None, process_group: object | None = None,
                 strict: bool | None = None, check_values: bool | None = None, policy: str | None = None,
                 buckets: Iterable[int] | None = None, allow_extra_memory: bool = False) -> None:
        """``prepare_finalize`` is the expert-parallel dispatcher for ``config.parallel.all2all``. When it
        is ``None`` and the config has an all2all, the layer builds it with
        ``moe_oracle.distributed.make_prepare_finalize(config, process_group)`` (``process_group``: the
        expert-parallel group; ``None``: derived from the initialized world); without an all2all the
        local one is used. With an expert-parallel dispatcher, rank 0 of its group selects and the
        other ranks take its choice. ``strict``: refuse the reference experts chosen for want of a
        faster backend (``None``: ``MOE_ORACLE_STRICT``).
        ``check_values``: ``None`` (default) checks values where that costs no device synchronization
        (CPU tensors), unless ``MOE_ORACLE_CHECK_VALUES=1``/``0`` (read here, once) says otherwise;
        ``True`` everywhere (a synchronization per forward on accelerators); ``False`` nowhere.
        ``policy`` (``None``: ``MOE_ORACLE_POLICY``, default ``"rules"``) and ``buckets`` make the plan
        (``Selection.plan``); each forward runs its token count's bucket, looked up on the host. Buckets
        run other weight layouts than the primary backend's only with ``allow_extra_memory``. Under
        expert parallelism rank 0's backend is agreed; a measured plan is not yet shared across ranks."""
        super().__init__()
        if not isinstance(config, MoEConfig):
            raise TypeError(f"config must be a MoEConfig, got {type(config).__name__}")
        if prepare_finalize is None and config.parallel.use_all2all_kernels:
            prepare_finalize = _distributed_prepare_finalize(config, process_group)
        self.check_values = check_values_default(check_values)
        self.prepare_finalize = prepare_finalize
        self.config = config
        self.oracle = oracle_for(config)
        if _is_expert_parallel(prepare_finalize):
            from moe_oracle.distributed.agree import agree_selection

            group = prepare_finalize.group  # type: ignore[union-attr]
            self.selection: Selection = agree_selection(self.oracle, config, platform, group=group, backend=backend,
                                                        exclude=exclude, prefer=prefer, strict=strict)
        else:
            self.selection = self.oracle.select_backend(config, platform, backend=backend, exclude=exclude,
                                                        prefer=prefer, strict=strict, policy=policy, buckets=buckets,
                                                        allow_extra_memory=allow_extra_memory)
        self._reset_weights()
        self.conversions = 0
        self._op_id = ops.register(self)

    def _reset_weights(self) -> None:
        self.kernel_weights: KernelWeights | None = None
        self.kernel: FusedMoEKernel | None = None
        self._load_id = 0
        self.expert_map: torch.Tensor | None = None
        self._device: torch.device | None = None
        self._score_bias: torch.Tensor | None = None          # [E] as loaded (monolithic kernels take it)
        self._score_bias_f32: torch.Tensor | None = None      # [E] float32 (the router takes it)
        self._kept_canonical: CanonicalWeights | None = None  # only for a converter without an inverse
        self._buckets: BucketKernels | None = None             # the plan's kernels, one per token bucket

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
        convert them once to the backend's layout. Tensors stay on the device they come on.

        The layer owns its weights afterwards: it never reads the given tensors again (where the
        backend's layout is the canonical one, it holds copies), so changing them in place changes
        nothing; call ``load_weights`` again to update. On any error the layer is left as it was."""
        weights = CanonicalWeights(
            w13=w13, w2=w2, w13_bias=w13_bias, w2_bias=w2_bias, w13_scale=w13_scale, w2_scale=w2_scale,
            a13_scale=a13_scale, a2_scale=a2_scale, w13_zero_point=w13_zero_point, w2_zero_point=w2_zero_point,
            w13_global_scale=w13_global_scale, w2_global_scale=w2_global_scale,
            score_correction_bias=score_correction_bias,
        )
        self._install(weights, own=True)

    def _install(self, weights: CanonicalWeights, *, own: bool) -> None:
        """Validate, convert and assemble ``weights``; the layer changes only once all of it succeeded.
        ``own=False`` shares the given tensors' storage where the layout allows (the caller keeps them
        and promises to reload after changing them: the transformers integration, ``.to()``, unpickling)."""
        validate_canonical(self.config, weights)
        load_id = next(_load_ids)
        converted = convert_primary(self.oracle, self.selection, self.config, weights)
        if own:
            converted = _without_aliases(converted, weights)
        converted = KernelWeights(backend=converted.backend, config=converted.config, tensors=converted.tensors,
                                  layout=converted.layout, source=load_id, extras=converted.extras)
        quant_config = self.oracle.make_quant_config(converted.config, converted)
        kernel = self.oracle.make_kernel(self.selection, self.config, quant_config, converted,
                                         prepare_finalize=self.prepare_finalize)
        buckets = build_bucket_kernels(
            self.oracle, self.selection, self.config, weights, converted, kernel,
            lambda backend, kw: self.oracle.make_kernel(backend, self.config, self.oracle.make_quant_config(
                kw.config, kw), kw, prepare_finalize=self.prepare_finalize))
        kept = None
        if converted.layout != "canonical" and self.selection.spec.load_inverse() is None:
            logger.warning("moe-oracle: backend %s has no inverse converter (to_canonical): the layer keeps the "
                           "canonical tensors beside its converted ones", self.backend)
            kept = _owned_copy(weights) if own else weights
        bias = converted.get("score_correction_bias")
        if bias is None and weights.score_correction_bias is not None:
            bias = weights.score_correction_bias.clone() if own else weights.score_correction_bias
        device = weights.w13.device
        expert_map = self._make_expert_map(device)
        # Everything succeeded: commit.
        self.kernel_weights, self.kernel, self._load_id, self._buckets = converted, kernel, load_id, buckets
        self.expert_map, self._device, self._kept_canonical = expert_map, device, kept
        self._score_bias = bias
        self._score_bias_f32 = None if bias is None else bias.float()
        self.conversions += 1

    def process_weights(self) -> None:
        """Kept for callers of the two-step API: ``load_weights`` converts at once, so this only
        checks that there are weights (converting twice is a no-op)."""
        if self.kernel_weights is None:
            raise RuntimeError("process_weights() before load_weights(): there are no weights to convert")

    @property
    def canonical(self) -> CanonicalWeights | None:
        """The current weights in canonical form, or ``None`` before ``load_weights``: the kernel's own
        tensors where its layout is canonical (same storage), else new tensors from the converter's
        exact inverse, built on each access."""
        kw = self.kernel_weights
        if kw is None:
            return None
        if self._kept_canonical is not None:
            return self._kept_canonical
        if kw.layout == "canonical":
            return CanonicalWeights(**{name: t for name, t in kw.tensors.items() if name in TENSOR_NAMES})
        inverse = self.selection.spec.load_inverse()
        return inverse(kw)

    def _make_expert_map(self, device: torch.device) -> torch.Tensor | None:
        """Global expert id -> local id on this rank, -1 elsewhere; ``None`` without expert parallelism."""
        from moe_oracle.distributed.placement import expert_map

        return expert_map(self.config, device)  # follows config.parallel.placement

    # Module semantics: state_dict, .to(), deepcopy, pickle -----------------------------------
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        """The canonical tensors under the ``load_weights`` keyword names (``w13``, ``w2``, ...)."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        canonical = self.canonical
        if canonical is not None:
            for name, t in canonical.items():
                destination[prefix + name] = t if keep_vars else t.detach()

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        """``load_state_dict(sd)`` is ``load_weights(**sd)`` (on the layer's device once it has weights)."""
        given = {key[len(prefix):]: t for key, t in state_dict.items()
                 if key.startswith(prefix) and key[len(prefix):] in TENSOR_NAMES}
        others = {key: t for key, t in state_dict.items() if key[len(prefix):] not in given or not key.startswith(prefix)}
        super()._load_from_state_dict(others, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        required = [name for name, spec in expected_tensors(self.config).items() if spec.required]
        missing = [prefix + name for name in required if name not in given]
        missing_keys.extend(missing)
        if missing:
            return
        if self._device is not None:
            given = {name: t.to(self._device) for name, t in given.items()}
        self.load_weights(**given)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> MoELayer:
        """``.to(device)``, ``.cuda()``, ``.cpu()``: the canonical tensors move (through the inverse) and
        are converted again there. The dtypes are the config's: a dtype change is refused."""
        super()._apply(fn, recurse)
        canonical = self.canonical
        if canonical is None:
            return self
        before = dict(canonical.items())
        after = {name: fn(t) for name, t in before.items()}
        if all(after[name] is t for name, t in before.items()):
            return self
        changed = [name for name, t in before.items() if after[name].dtype != t.dtype]
        if changed:
            raise TypeError(f"MoELayer's tensor dtypes follow its config ({self.config.scheme.name}, "
                            f"dtype {str(self.config.dtype).removeprefix('torch.')}); cannot change the dtype of "
                            f"{', '.join(changed)}: build a MoELayer for the other dtype and load the weights there")
        self._install(CanonicalWeights(**after), own=False)
        return self

    def __getstate__(self) -> dict[str, Any]:
        """The canonical tensors stand for the converted weights; the kernel is rebuilt on load."""
        state = self.__dict__.copy()
        canonical = self.canonical
        for name in ("kernel", "kernel_weights", "oracle", "expert_map", "_score_bias", "_score_bias_f32",
                     "_kept_canonical", "_op_id", "_buckets"):
            state.pop(name, None)
        state["_canonical_state"] = None if canonical is None else dict(canonical.items())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        canonical = state.pop("_canonical_state", None)
        super().__setstate__(state)
        self.oracle = oracle_for(self.config)
        self._reset_weights()
        self._op_id = ops.register(self)
        if canonical is not None:
            conversions = self.conversions
            self._install(CanonicalWeights(**canonical), own=False)
            self.conversions = conversions

    # Forward -----------------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        """hidden_states ``[T, H]`` (config dtype), router_logits ``[T, E]`` float -> ``[T, H]``."""
        self._ready()
        self._check_hidden(hidden_states)
        t = hidden_states.shape[0]
        check_tensor("router_logits", router_logits, (t, self.config.num_experts), FLOAT_DTYPES, hidden_states.device)
        if should_check_values(self.check_values, router_logits):
            check_finite("router_logits", router_logits)
        if torch.compiler.is_compiling():
            return torch.ops.moe_oracle.moe_forward(hidden_states, router_logits, self._op_id)
        return self._forward_logits(hidden_states, router_logits)

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
        if should_check_values(self.check_values, topk_ids) and topk_ids.numel():
            lo, hi = int(topk_ids.min()), int(topk_ids.max())
            if lo < 0 or hi >= self.config.num_experts:
                raise InputError("topk_ids", f"expert ids in [0, {self.config.num_experts})",
                                 f"ids in [{lo}, {hi}]")
            check_finite("topk_weights", topk_weights)
        if torch.compiler.is_compiling():
            return torch.ops.moe_oracle.moe_forward_routed(hidden_states, topk_weights, topk_ids, self._op_id)
        return self._forward_routed(hidden_states, topk_weights, topk_ids)

    # The validated paths: what the custom ops run, and what eager forwards call directly.
    def _forward_logits(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        kernel = self._kernel_for(hidden_states.shape[0])
        with checked_inputs():
            if kernel.monolithic:
                out = kernel.forward_logits(hidden_states, router_logits, expert_map=self.expert_map,
                                            score_correction_bias=self._score_bias)
            else:
                from moe_oracle.router import _route

                c = self.config
                topk_weights, topk_ids = _route(router_logits, c.routing, c.top_k, self._score_bias_f32)
                out = kernel.forward_routed(hidden_states, topk_weights, topk_ids, expert_map=self.expert_map)
        return self._check_output(out, hidden_states)

    def _forward_routed(self, hidden_states: torch.Tensor, topk_weights: torch.Tensor,
                        topk_ids: torch.Tensor) -> torch.Tensor:
        kernel = self._kernel_for(hidden_states.shape[0])
        with checked_inputs():
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
        h = self.config.hidden_size
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 2 or hidden_states.shape[1] != h:
            got = _describe(hidden_states) if isinstance(hidden_states, torch.Tensor) else type(hidden_states).__name__
            raise InputError("hidden_states", f"shape [T, {h}]", got)
        if hidden_states.dtype != self.config.dtype:
            raise InputError("hidden_states", f"dtype {str(self.config.dtype).removeprefix('torch.')}",
                             f"dtype {str(hidden_states.dtype).removeprefix('torch.')}")
        if hidden_states.device != self._device:
            raise InputError("hidden_states", f"device {self._device} (where the weights are)",
                             f"device {hidden_states.device}")


# Ownership ---------------------------------------------------------------------------------------
def _storage(t: object) -> int | None:
    """The data pointer of a tensor's storage; ``None`` for what has none (opaque oneDNN tensors)."""
    if not isinstance(t, torch.Tensor):
        return None
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _without_aliases(converted: KernelWeights, given: CanonicalWeights) -> KernelWeights:
    """``converted`` with every tensor (in ``tensors``, or an ``extras`` tensor, tuple or NamedTuple) that
    shares storage with one of ``given`` replaced by a copy: the layer's weights are its own."""
    theirs = {p for _, t in given.items() if (p := _storage(t))}

    def own(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.clone() if _storage(value) in theirs else value
        if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
            items = [own(v) for v in value]
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # NamedTuples too
        return value

    tensors = {name: own(t) for name, t in converted.tensors.items()}
    extras = {name: own(v) for name, v in converted.extras.items()}
    return KernelWeights(backend=converted.backend, config=converted.config, tensors=tensors,
                         layout=converted.layout, source=converted.source, extras=extras)


def _owned_copy(weights: CanonicalWeights) -> CanonicalWeights:
    return CanonicalWeights(**{name: t.clone() for name, t in weights.items()})

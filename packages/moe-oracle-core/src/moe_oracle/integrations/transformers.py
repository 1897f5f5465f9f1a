"""moe-oracle as a Hugging Face transformers experts implementation.

    import moe_oracle.integrations.transformers as moe_tf
    model = AutoModelForCausalLM.from_pretrained(...)
    moe_tf.enable(model)                       # or model.set_experts_implementation("moe_oracle")
    model.generate(...)                        # every experts module runs on the backend moe-oracle selects
    moe_tf.disable(model)                      # back to the implementation the model had

Importing this module registers ``"moe_oracle"`` in transformers' experts interface
(``transformers.integrations.moe.ALL_EXPERTS_FUNCTIONS``, and the FP8 one for fine-grained FP8
checkpoints). Its function is called as ``fn(experts_module, hidden_states [T, H], top_k_index [T, K],
top_k_weights [T, K])``: transformers routes, moe-oracle runs the experts (``MoELayer.forward_routed``).

Every experts module decorated with ``use_experts_implementation`` is served when its layout fits
(transformers >= 5; tested: Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3, gpt-oss, OLMoE):

- ``gate_up_proj [E, 2I, H]`` / ``down_proj [E, H, I]`` (``is_transposed=False``, concatenated gate then
  up) *is* the canonical layout: the layer shares the model's parameters, no second copy (a backend
  that packs its own layout, such as ``cpu_grouped``, keeps what its converter makes).
- ``is_transposed=True`` (``[E, H, 2I]`` / ``[E, I, H]``) and gpt-oss's interleaved gate/up columns
  (``is_concatenated=False``, with biases) are rearranged into canonical tensors once per weight version.
- FP8 experts (``FP8Experts``: e4m3 weights with ``*_scale_inv`` per 128x128 block) are
  ``fp8_block`` canonical tensors as they are (e8m0 scales become float32, exactly).

Not served, with the reason, when ``enable`` runs: non-gated experts, a custom ``_apply_gate``
other than gpt-oss's, a post-expert norm, expert parallelism, activations moe-oracle lacks.

The ``MoEConfig`` comes from the model's config (``MoEConfig.from_hf`` for the families it knows,
the experts module's sizes and ``hidden_act`` otherwise), with the parameters' dtype, and with
routing left to transformers (the experts receive routed tokens). The weights are converted once
per weight version: a version is the parameters' storage, version counter, device and dtype, so
``load_state_dict``, an in-place update or ``model.to(device)`` is picked up at the next forward.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from moe_oracle.config.moe import MoEConfig, dtype_name
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.errors import ConfigError
from moe_oracle.kernel.weights import CanonicalWeights
from moe_oracle.layer import MoELayer

NAME = "moe_oracle"
_BOUND = "_moe_oracle"                # attribute of an experts module: its _Binding
_PREVIOUS = "_moe_oracle_previous"    # attribute of an enabled model: the implementation to restore
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu"}
logger = logging.getLogger("moe_oracle")


def _interfaces() -> list[Any]:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    found = [ALL_EXPERTS_FUNCTIONS]
    try:
        from transformers.integrations.finegrained_fp8 import ALL_FP8_EXPERTS_FUNCTIONS
    except ImportError:  # older transformers: no FP8 experts interface
        return found
    return [*found, ALL_FP8_EXPERTS_FUNCTIONS]


def register() -> None:
    """Register ``"moe_oracle"`` with transformers' experts interfaces (done on import; idempotent)."""
    for interface in _interfaces():
        interface.register(NAME, experts_forward)


@dataclass
class _Binding:
    """One experts module's MoELayer and the weight version it was converted from."""

    layer: MoELayer
    version: tuple[Any, ...]
    backend: str | None


# The experts function transformers calls ---------------------------------------------------------
def experts_forward(module: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """``[T, H]`` hidden states, ``[T, K]`` expert ids and weights (transformers routed them) -> ``[T, H]``."""
    binding = _current(module, getattr(getattr(module, _BOUND, None), "backend", None))
    return binding.layer.forward_routed(hidden_states, top_k_weights, top_k_index)


def _current(module: torch.nn.Module, backend: str | None) -> _Binding:
    """The module's binding, converted again if its weights changed since (a new version)."""
    binding: _Binding | None = module.__dict__.get(_BOUND)
    version = _version(module)
    if binding is not None and binding.version == version:
        return binding
    config = moe_config(module)
    layer = binding.layer if binding is not None and binding.backend == backend else None
    if layer is None or layer.config != config:  # first time, another backend, or new sizes/dtype
        layer = MoELayer(config, backend=backend)
    # Shared where the layout is canonical: the model keeps owning its parameters, and a change to
    # them is a new version, picked up above.
    layer._install(canonical_weights(module), own=False)
    binding = _Binding(layer, version, backend)
    module.__dict__[_BOUND] = binding
    return binding


# enable / disable ---------------------------------------------------------------------------------
def enable(model: torch.nn.Module, *, backend: str | None = None, policy: str | None = None) -> torch.nn.Module:
    """Serve every experts module of ``model`` with moe-oracle and return ``model``.

    Selection and the first conversion happen here, so a config no backend serves fails now
    (``ConfigError`` / ``NoBackendError`` naming the module). ``backend`` forces one backend;
    ``policy`` must be ``None`` or ``"rules"`` (merged priorities; measured selection is not built yet).
    """
    if policy not in (None, "rules"):
        raise ConfigError("policy", f"{policy!r}: the transformers integration selects by rules only (None or 'rules')")
    register()
    modules = list(experts_modules(model))
    if not modules:
        raise ConfigError("model", f"{type(model).__name__} has no experts module using transformers' experts "
                          "interface (transformers.integrations.moe.use_experts_implementation)")
    for name, module in modules:
        try:
            _current(module, backend)
        except Exception as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"in experts module {name!r} ({type(module).__name__}) of {type(model).__name__}")
            raise
    config = getattr(model, "config", None)
    previous = getattr(config, "_experts_implementation", None)
    if previous != NAME:
        model.__dict__[_PREVIOUS] = previous
    model.set_experts_implementation(NAME)  # type: ignore[operator]
    return model


def disable(model: torch.nn.Module) -> torch.nn.Module:
    """Restore the experts implementation ``model`` had before ``enable`` and drop moe-oracle's layers."""
    previous = model.__dict__.pop(_PREVIOUS, None) or "eager"
    model.set_experts_implementation(previous)  # type: ignore[operator]
    for _, module in experts_modules(model):
        module.__dict__.pop(_BOUND, None)
    return model


def experts_modules(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """``(name, module)`` for every experts module dispatched through the experts interface."""
    for name, module in model.named_modules():
        if hasattr(module, "has_gate") and hasattr(module, "is_transposed") and hasattr(module, "down_proj"):
            yield name, module


# Config and weights from the experts module -------------------------------------------------------
def _weight(module: torch.nn.Module, name: str) -> torch.Tensor:
    t = getattr(module, name)
    return t.detach() if isinstance(t, torch.Tensor) else t


def _scheme(module: torch.nn.Module) -> str | None:
    """The quantization scheme of the module's weights, ``None`` when they are plain floats."""
    if getattr(module, "gate_up_proj_scale_inv", None) is not None:
        block = getattr(module, "block_size", None)
        if getattr(module, "activation_scheme", "dynamic") != "dynamic" or tuple(block or ()) != (128, 128):
            raise ConfigError("quantization", f"FP8 experts with block_size={block} and activation_scheme="
                              f"{getattr(module, 'activation_scheme', None)!r}: moe-oracle maps dynamic 128x128 blocks "
                              "(fp8_block)")
        return "fp8_block"
    return None


def _check_layout(module: torch.nn.Module) -> None:
    from transformers.integrations.moe import _default_apply_gate

    kind = type(module).__name__
    if not module.has_gate:
        raise ConfigError("experts", f"{kind} has no gate (up_proj only): moe-oracle serves gated experts here")
    if getattr(module, "has_post_expert_norm", False):
        raise ConfigError("experts", f"{kind} normalizes each expert's output (has_post_expert_norm)")
    if getattr(module, "_is_expert_parallel", False):
        raise ConfigError("experts", f"{kind} runs transformers' expert parallelism")
    gate = getattr(type(module), "_apply_gate", _default_apply_gate)
    if gate is not _default_apply_gate and not _is_gpt_oss(module) and _scheme(module) is None:
        raise ConfigError("experts", f"{kind} has its own _apply_gate: moe-oracle serves silu/gelu gates and gpt-oss's")


def _is_gpt_oss(module: torch.nn.Module) -> bool:
    return getattr(module.config, "model_type", "") == "gpt_oss"


def moe_config(module: torch.nn.Module) -> MoEConfig:
    """The ``MoEConfig`` of one experts module: from its model's config, sized and typed by its tensors."""
    _check_layout(module)
    cfg: Any = module.config  # a transformers PretrainedConfig
    scheme = _scheme(module)
    gate_up = _weight(module, "gate_up_proj")
    down = _weight(module, "down_proj")
    dtype = _compute_dtype(module, gate_up)
    quant = scheme or dtype_name(dtype)
    e = gate_up.shape[0]
    h, i = (down.shape[2], down.shape[1]) if module.is_transposed else (down.shape[1], down.shape[2])
    from moe_oracle.config.hf import FAMILIES

    model_type = getattr(cfg, "model_type", "")
    if model_type in FAMILIES:
        config = MoEConfig.from_hf(cfg.to_dict(), quant=quant, dtype=dtype_name(dtype))
    else:
        act = getattr(cfg, "hidden_act", None) or getattr(cfg, "hidden_activation", None)
        if act not in _ACTIVATIONS:
            raise ConfigError("hidden_act", f"{act!r} ({model_type}): moe-oracle runs {', '.join(_ACTIVATIONS)}")
        top_k = getattr(cfg, "num_experts_per_tok", None) or getattr(cfg, "experts_per_token", None) or 1
        config = MoEConfig(num_experts=e, top_k=min(int(top_k), e), hidden_size=h, intermediate_size=i,
                           activation=_ACTIVATIONS[act], dtype=dtype, quant=quant,  # type: ignore[arg-type]
                           has_bias=bool(getattr(module, "has_bias", False)))
    if (config.num_experts, config.hidden_size, config.intermediate_size) != (e, h, i):
        raise ConfigError("config", f"{model_type}: config.json gives E={config.num_experts} H={config.hidden_size} "
                          f"I={config.intermediate_size}, the experts module holds E={e} H={h} I={i}")
    return config.replace(routing=RoutingConfig())  # transformers routes; the experts get routed tokens


def _compute_dtype(module: torch.nn.Module, gate_up: torch.Tensor) -> torch.dtype:
    if gate_up.is_floating_point() and gate_up.element_size() > 1:
        return gate_up.dtype
    dtype = getattr(module.config, "dtype", None) or getattr(module.config, "torch_dtype", None) or torch.bfloat16
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype))


def canonical_weights(module: torch.nn.Module) -> CanonicalWeights:
    """The module's experts as canonical tensors (``moe_oracle.kernel.canonical``): its parameters
    themselves where the layout is canonical, else rearranged copies."""
    gate_up, down = _weight(module, "gate_up_proj"), _weight(module, "down_proj")
    tensors: dict[str, torch.Tensor] = {}
    b13 = _weight(module, "gate_up_proj_bias") if getattr(module, "has_bias", False) else None
    b2 = _weight(module, "down_proj_bias") if getattr(module, "has_bias", False) else None
    if module.is_transposed:
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)       # [E, 2I, H], [E, H, I]
    if not module.is_concatenated:                                         # rows gate0, up0, gate1, up1, ...
        gate_up = torch.cat([gate_up[:, 0::2], gate_up[:, 1::2]], dim=1)    # [E, 2I, H]: gate rows, then up rows
        if b13 is not None:
            b13 = torch.cat([b13[:, 0::2], b13[:, 1::2]], dim=1)            # [E, 2I]
    tensors["w13"], tensors["w2"] = gate_up.contiguous(), down.contiguous()  # no copy when already canonical
    if b13 is not None and b2 is not None:
        tensors["w13_bias"], tensors["w2_bias"] = b13.contiguous(), b2.contiguous()
    if _scheme(module) == "fp8_block":
        tensors["w13_scale"] = _weight(module, "gate_up_proj_scale_inv").float()  # [E, 2I/128, H/128]
        tensors["w2_scale"] = _weight(module, "down_proj_scale_inv").float()      # [E, H/128, I/128]
    return CanonicalWeights(**tensors)


def _version(module: torch.nn.Module) -> tuple[Any, ...]:
    """What identifies the weights' current values: storage, version counter, device, dtype, shape."""
    key: list[Any] = []
    for name in ("gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias",
                 "gate_up_proj_scale_inv", "down_proj_scale_inv"):
        t = getattr(module, name, None)
        if not isinstance(t, torch.Tensor):
            continue
        try:
            counter = t._version
        except RuntimeError:  # inference tensors have no version counter
            counter = None
        key.append((name, t.data_ptr(), counter, t.device, t.dtype, tuple(t.shape)))
    return tuple(key)


register()

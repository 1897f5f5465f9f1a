"""``MoEConfig`` from a Hugging Face ``config.json``.

Each model family spells the same facts differently (``num_local_experts`` vs ``num_experts``
vs ``n_routed_experts``; ``intermediate_size`` vs ``moe_intermediate_size``) and routes tokens
its own way, so reading is one table, ``FAMILIES``, keyed by ``model_type`` and gathered from
one small module per family (or per group of similar families): ``mixtral``, ``qwen``,
``deepseek``, ``gpt_oss``, ... The key readers they share are in ``keys``. The checkpoint's
``quantization_config`` maps to a scheme name through a second table, ``QUANT_METHODS`` (in
``quant``), keyed by ``quant_method``.

Only the routed experts of one MoE layer are described. Shared experts (Qwen2-MoE, DeepSeek,
GLM-4.5, Llama 4, ...) are a dense MLP beside them, and dense layers (DeepSeek's
``first_k_dense_replace``, Llama 4's interleaving) have no experts: both are outside the fused
kernel, so a ``MoEConfig`` carries neither; each family module says where its model keeps them.

Optional router keys default to what the model's reference code uses when the key is absent
(e.g. Qwen ``norm_topk_prob`` is ``False``); the sizes are required. Anything not understood,
or that the family's code needs and a ``MoEConfig`` cannot express, raises ``ConfigError``
naming the ``config.json`` key and listing what is supported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moe_oracle.config.hf import deepseek, ernie, gpt_oss, granitemoe, hunyuan, llama4, mixtral, olmoe, phimoe, qwen
from moe_oracle.config.hf.keys import Family, Json
from moe_oracle.config.hf.quant import QUANT_METHODS, quant_from_hf
from moe_oracle.config.moe import DTYPES, MoEConfig
from moe_oracle.config.quant import UNQUANTIZED_NAMES, QuantScheme
from moe_oracle.config.validate import show
from moe_oracle.errors import ConfigError

__all__ = ["FAMILIES", "QUANT_METHODS", "Family", "apply_overrides", "config_from_hf", "quant_from_hf"]

# model_type -> Family. Adding a family: a module (or an entry in the module of a similar family)
# whose FAMILIES tuple holds its Family, and the module named here.
_MODULES = (mixtral, qwen, deepseek, gpt_oss, olmoe, llama4, granitemoe, ernie, hunyuan, phimoe)
FAMILIES: dict[str, Family] = {f.model_type: f for module in _MODULES for f in module.FAMILIES}
_MOE_FIELDS = tuple(f.name for f in dataclasses.fields(MoEConfig))
_HF_DTYPES = ("bfloat16", "float16", "float32")


def config_from_hf(source: str | os.PathLike[str] | Json, **overrides: Any) -> MoEConfig:
    """Read a ``config.json`` (dict, file, or directory holding one) into a ``MoEConfig``.

    ``overrides`` are ``MoEConfig`` fields that replace what the file says; an overridden field
    is not read, so ``quant="bf16"`` also works for a checkpoint whose quantization is not
    supported. An unquantized ``quant`` override (``"bf16"``, ``"fp16"``, ``"fp32"``) sets
    ``dtype`` too unless ``dtype`` is given (see ``apply_overrides``).
    """
    unknown = sorted(set(overrides) - set(_MOE_FIELDS))
    if unknown:
        raise ConfigError("overrides", f"unknown MoEConfig field(s) {', '.join(unknown)}", allowed=_MOE_FIELDS)
    outer = _load(source)
    text, family = _text_config(outer)
    fields = family.read(text, skip=set(overrides))
    if "quant" not in overrides:
        fields["quant"] = quant_from_hf(text.get("quantization_config") or outer.get("quantization_config"))
    if "dtype" not in overrides:
        fields["dtype"] = _dtype(text, outer)
    return MoEConfig(**apply_overrides(fields, overrides))


def apply_overrides(fields: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with ``overrides`` on top; an unquantized ``quant`` override also sets ``dtype`` unless given.

    Shared by ``from_hf`` and the presets, so ``quant="fp16"`` means an fp16 layer in both.
    """
    merged = {**fields, **overrides}
    if "quant" in overrides and "dtype" not in overrides:
        quant = QuantScheme.parse(overrides["quant"])
        if quant.name in UNQUANTIZED_NAMES:
            merged["dtype"] = quant.name
    return merged


# Loading -------------------------------------------------------------------------------------
def _load(source: str | os.PathLike[str] | Json) -> Json:
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError("source", f"expected a path or a dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError("source", f"no config.json at {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError("source", f"cannot read {path}: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("source", f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                          "config.json files are UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError("source", f"{path} is not valid JSON: {err}") from err
    except (ValueError, RecursionError) as err:  # e.g. an int longer than sys.get_int_max_str_digits()
        raise ConfigError("source", f"{path} is not usable JSON: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError("source", f"{path} holds a JSON {type(data).__name__}, expected an object")
    return data


def _text_config(outer: Json) -> tuple[Json, Family]:
    """The dict holding the MoE fields: the file itself, or its ``text_config`` (multimodal wrappers)."""
    model_type = outer.get("model_type")
    if isinstance(model_type, str) and model_type in FAMILIES:
        return outer, FAMILIES[model_type]
    inner = outer.get("text_config")
    if isinstance(inner, Mapping) and isinstance(inner.get("model_type"), str) and inner["model_type"] in FAMILIES:
        return inner, FAMILIES[inner["model_type"]]
    if model_type is None:
        raise ConfigError("model_type", "missing from config.json", allowed=sorted(FAMILIES))
    raise ConfigError("model_type", f"unsupported model_type {show(model_type)}", allowed=sorted(FAMILIES))


def _dtype(text: Json, outer: Json) -> str:
    """Compute dtype: ``dtype`` (transformers >= 4.56) or ``torch_dtype``; bf16 when absent (gpt-oss)."""
    for where in (text, outer):
        for key in ("dtype", "torch_dtype"):
            value = where.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or value.lower().removeprefix("torch.") not in DTYPES:
                raise ConfigError(key, f"unsupported compute dtype {value!r}", allowed=_HF_DTYPES)
            return value.lower().removeprefix("torch.")
    return "bfloat16"

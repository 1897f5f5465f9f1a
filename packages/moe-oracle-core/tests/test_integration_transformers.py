"""moe_oracle.integrations.transformers on tiny random models of every family (issue 14): greedy
generation token-identical to transformers' eager experts in fp32, logits close in bf16/fp16,
disable() restores the original outputs, one conversion per weight version, no second copy where
the layout is canonical."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5",
                                   reason="transformers >= 5 (pip install 'moe-oracle-core[transformers]')")

from tf_models import FAMILIES, tiny_model  # noqa: E402

import moe_oracle.integrations.transformers as moe_tf  # noqa: E402
from moe_oracle import ConfigError  # noqa: E402

IDS = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
MASK = torch.ones_like(IDS)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS, attention_mask=MASK).logits.float()


def generate(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(IDS, attention_mask=MASK, max_new_tokens=8, do_sample=False, pad_token_id=0)


def layers(model: torch.nn.Module) -> list[object]:
    return [m.__dict__["_moe_oracle"].layer for _, m in moe_tf.experts_modules(model)]


@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fp32_generation_is_token_identical(family: str, backend: str | None) -> None:
    model = tiny_model(family)
    ref_logits, ref_tokens = logits(model), generate(model)
    assert moe_tf.enable(model, backend=backend) is model
    assert model.config._experts_implementation == moe_tf.NAME
    assert layers(model) and all(layer.backend == (backend or layer.backend) for layer in layers(model))
    torch.testing.assert_close(logits(model), ref_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(generate(model), ref_tokens)
    moe_tf.disable(model)
    assert model.config._experts_implementation == "eager"
    assert torch.equal(logits(model), ref_logits)                       # disable restores the original outputs


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss"])
def test_half_precision_logits_within_tolerance(family: str, dtype: torch.dtype) -> None:
    model = tiny_model(family, dtype=dtype)
    ref = logits(model)
    moe_tf.enable(model)
    out = logits(model)
    # Relative to the logits' scale: the experts' products round differently in bf16/fp16 (16 bits of output).
    scale = ref.abs().max().item()
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert (out - ref).abs().max().item() <= tol * scale
    moe_tf.disable(model)
    assert torch.equal(logits(model), ref)


def test_conversion_once_per_weight_version() -> None:
    model = tiny_model("mixtral")
    moe_tf.enable(model, backend="reference")
    first = layers(model)[0]
    logits(model)
    logits(model)
    assert first.conversions == 1                                         # converted in enable(), not per forward
    # A reload of the model's weights (in place, as load_state_dict does) is picked up at the next forward.
    sd = {k: v * 1.5 if "experts" in k else v for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    out = logits(model)
    assert first.conversions == 2
    moe_tf.disable(model)
    torch.testing.assert_close(out, logits(model), rtol=1e-5, atol=1e-5)


def test_no_second_copy_where_the_layout_is_canonical() -> None:
    model = tiny_model("qwen3_moe")
    moe_tf.enable(model, backend="reference")
    for (_, module), layer in zip(moe_tf.experts_modules(model), layers(model), strict=True):
        assert layer.kernel_weights.w13.data_ptr() == module.gate_up_proj.data_ptr()
        assert layer.kernel_weights.w2.data_ptr() == module.down_proj.data_ptr()


def test_set_experts_implementation_alone_works() -> None:
    model = tiny_model("olmoe")
    ref = logits(model)
    model.set_experts_implementation(moe_tf.NAME)                          # registered on import
    torch.testing.assert_close(logits(model), ref, rtol=1e-5, atol=1e-5)


def test_config_comes_from_the_model() -> None:
    model = tiny_model("gpt_oss")
    _, module = next(moe_tf.experts_modules(model))
    config = moe_tf.moe_config(module)
    assert (config.num_experts, config.top_k, config.hidden_size, config.intermediate_size) == (8, 2, 64, 32)
    assert config.activation == "swigluoai" and config.has_bias and config.swiglu_limit == model.config.swiglu_limit
    assert config.dtype == torch.float32


def test_unserved_layouts_are_refused_with_a_reason() -> None:
    model = tiny_model("mixtral")
    _, module = next(moe_tf.experts_modules(model))
    module.has_gate = False
    with pytest.raises(ConfigError, match="has no gate"):
        moe_tf.enable(model)
    with pytest.raises(ConfigError, match="policy"):
        moe_tf.enable(tiny_model("mixtral"), policy="measured")

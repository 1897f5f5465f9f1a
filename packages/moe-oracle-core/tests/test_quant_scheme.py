import re

import pytest

from moe_oracle import SCHEME_NAMES, ConfigError, QuantScheme
from moe_oracle.config.quant import Granularity, QuantKey

FAMILIES = {
    "bf16": "unquantized", "fp16": "unquantized", "fp32": "unquantized",
    "fp8_tensor": "fp8", "fp8_tensor_static": "fp8", "fp8_channel": "fp8", "fp8_block": "fp8",
    "int8_w8a8": "int8", "int8_w8a16": "int8", "int4_w4a16": "wna16", "int8_w8a16_group": "wna16",
    "w4a8_int8": "w4a8_int8", "w4a8_fp8": "w4a8_fp8", "mxfp4": "mxfp4", "mxfp4_a8": "mxfp4", "mxfp8": "mxfp8",
    "nvfp4": "nvfp4",
}


def test_every_design_name_parses() -> None:
    design = ["bf16", "fp16", "fp32", "fp8_tensor", "fp8_tensor_static", "fp8_channel", "fp8_block", "int8_w8a8",
              "int8_w8a16", "int4_w4a16", "int8_w8a16_group", "w4a8_int8", "mxfp4", "mxfp4_a8", "mxfp8", "nvfp4"]
    assert set(design) <= set(SCHEME_NAMES)
    for name in SCHEME_NAMES:
        scheme = QuantScheme.parse(name)
        assert scheme.name == name
        assert scheme.family == FAMILIES[name]
        assert QuantScheme.parse(scheme) is scheme
        assert str(scheme).startswith(name + " (weights: ")


@pytest.mark.parametrize(("name", "weight", "activation"), [
    ("bf16", None, None),
    ("fp8_tensor", "fp8_e4m3 tensor static", "fp8_e4m3 tensor dynamic"),
    ("fp8_tensor_static", "fp8_e4m3 tensor static", "fp8_e4m3 tensor static"),
    ("fp8_channel", "fp8_e4m3 channel static", "fp8_e4m3 token dynamic"),
    ("fp8_block", "fp8_e4m3 block(128,128) static", "fp8_e4m3 group(128) dynamic"),
    ("int8_w8a8", "int8 channel static", "int8 token dynamic"),
    ("int8_w8a16", "int8 channel static", None),
    ("int4_w4a16", "int4 group(128) static", None),
    ("w4a8_int8", "int4 group(128) static", "int8 token dynamic"),
    ("mxfp4", "fp4_e2m1 group(32) static e8m0 scales", None),
    ("mxfp4_a8", "fp4_e2m1 group(32) static e8m0 scales", "fp8_e4m3 group(32) dynamic e8m0 scales"),
    ("mxfp8", "fp8_e4m3 group(32) static e8m0 scales", "fp8_e4m3 group(32) dynamic e8m0 scales"),
    ("nvfp4", "fp4_e2m1 group(16) static fp8_e4m3 scales + global scale",
     "fp4_e2m1 group(16) dynamic fp8_e4m3 scales + global scale"),
])
def test_keys(name: str, weight: str | None, activation: str | None) -> None:
    scheme = QuantScheme.parse(name)
    assert (str(scheme.weight) if scheme.weight else None) == weight
    assert (str(scheme.activation) if scheme.activation else None) == activation


def test_group_and_zero_point_options() -> None:
    s = QuantScheme.parse("int4_w4a16_g64_zp")
    assert s.name == "int4_w4a16_g64_zp" and s.base_name == "int4_w4a16"
    assert s.group_size == 64 and s.weight is not None and not s.weight.symmetric
    assert QuantScheme.parse("INT4_W4A16_g128").name == "int4_w4a16"
    assert QuantScheme.parse("int8_w8a16_group_g32").weight_bits == 8
    assert QuantScheme.parse("w4a8_int8_g32").group_size == 32
    assert repr(s) == "QuantScheme.parse('int4_w4a16_g64_zp')"
    assert eval(repr(s)) == s


@pytest.mark.parametrize(("name", "message"), [
    ("fp9", "quant: unknown scheme 'fp9' (allowed: bf16, fp16"),
    ("", "quant: unknown scheme ''"),
    ("fp8_block_g64", "quant: 'fp8_block' takes no _g<size>/_zp options"),
    ("int4_w4a16_g48", "quant: group size 48 in 'int4_w4a16_g48' (allowed: 32, 64, 128)"),
    ("w4a8_int8_zp", "quant: w4a8_int8 weights are symmetric"),
])
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as info:
        QuantScheme.parse(name)
    assert info.value.field == "quant"


def test_non_string_is_rejected() -> None:
    with pytest.raises(ConfigError, match="expected a scheme name \\(str\\), got int"):
        QuantScheme.parse(8)  # type: ignore[arg-type]


def test_key_validation() -> None:
    with pytest.raises(ConfigError, match=re.escape("QuantKey.dtype: unknown 'int3'")):
        QuantKey(dtype="int3", granularity=Granularity("tensor"), static=True)
    with pytest.raises(ConfigError, match="group needs 1 positive sizes"):
        Granularity("group")
    with pytest.raises(ConfigError, match="granularity: unknown kind 'row'"):
        Granularity("row")  # type: ignore[arg-type]

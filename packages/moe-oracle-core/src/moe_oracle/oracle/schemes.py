"""One oracle per scheme family; each adds only what is scheme-specific."""

from __future__ import annotations

from moe_oracle.config.moe import MoEConfig
from moe_oracle.config.quant import QuantScheme
from moe_oracle.errors import ConfigError
from moe_oracle.oracle.base import MoEKernelOracle


class UnquantizedOracle(MoEKernelOracle):
    family = "unquantized"


class Fp8Oracle(MoEKernelOracle):
    family = "fp8"


class Int8Oracle(MoEKernelOracle):
    family = "int8"


class WNA16Oracle(MoEKernelOracle):
    family = "wna16"


class W4A8Int8Oracle(MoEKernelOracle):
    family = "w4a8_int8"


class W4A8Fp8Oracle(MoEKernelOracle):
    family = "w4a8_fp8"


class Mxfp4Oracle(MoEKernelOracle):
    """One selector for mxfp4 with bf16 and with mxfp8 activations: the scheme's activation key
    (``mxfp4`` vs ``mxfp4_a8``) decides which backends' support checks pass."""

    family = "mxfp4"


class Mxfp8Oracle(MoEKernelOracle):
    family = "mxfp8"


class Nvfp4Oracle(MoEKernelOracle):
    family = "nvfp4"


ORACLE_CLASSES: dict[str, type[MoEKernelOracle]] = {
    cls.family: cls
    for cls in (UnquantizedOracle, Fp8Oracle, Int8Oracle, WNA16Oracle, W4A8Int8Oracle, W4A8Fp8Oracle,
                Mxfp4Oracle, Mxfp8Oracle, Nvfp4Oracle)
}
_instances: dict[str, MoEKernelOracle] = {}


def oracle_for(config: MoEConfig | QuantScheme | str) -> MoEKernelOracle:
    """The process-wide oracle of a config's (or scheme's) family."""
    if not isinstance(config, (MoEConfig, QuantScheme, str)):
        raise ConfigError("config", f"expected a MoEConfig (or a scheme name), got {type(config).__name__}")
    family = config.scheme.family if isinstance(config, MoEConfig) else QuantScheme.parse(config).family
    oracle = _instances.get(family)
    if oracle is None:
        oracle = _instances[family] = ORACLE_CLASSES[family]()
    return oracle

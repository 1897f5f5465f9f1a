"""Configuration types: the layer, its quantization, parallel layout and router."""

from moe_oracle.config.moe import ACTIVATIONS, MoEConfig
from moe_oracle.config.parallel import ParallelConfig
from moe_oracle.config.quant import SCHEME_NAMES, Granularity, QuantKey, QuantScheme
from moe_oracle.config.routing import RoutingConfig

__all__ = ["ACTIVATIONS", "SCHEME_NAMES", "Granularity", "MoEConfig", "ParallelConfig", "QuantKey",
           "QuantScheme", "RoutingConfig"]

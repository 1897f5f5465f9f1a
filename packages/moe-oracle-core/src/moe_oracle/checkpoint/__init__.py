"""Converters from checkpoints' tensors (as the model's library stores them) to canonical weights."""

from moe_oracle.checkpoint.gpt_oss import canonical_to_gpt_oss, gpt_oss_to_canonical

__all__ = ["canonical_to_gpt_oss", "gpt_oss_to_canonical"]

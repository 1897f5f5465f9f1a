"""Integrations with model libraries; each imports its library lazily (``moe_oracle.integrations.transformers``)."""

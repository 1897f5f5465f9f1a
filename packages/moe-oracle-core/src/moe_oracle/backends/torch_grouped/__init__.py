"""``torch_grouped``: MoE on torch's grouped GEMMs (``torch._grouped_mm``, ``torch._scaled_grouped_mm``)."""

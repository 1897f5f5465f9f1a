"""``cpu_grouped``: sorted-by-expert grouped GEMMs in torch, every scheme, every CPU."""

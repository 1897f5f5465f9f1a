"""Tuned launch configs of core's Triton experts for AMD GPUs, one JSON file per (device, E, N,
scheme); ``moe_oracle.triton.configs`` finds this folder through the ``moe_oracle.triton_configs``
entry point. Empty today: no AMD GPU has tuned any yet (files come from ``bench/tune_triton.py``
run on the GPU they are for, e.g. ``device_name=AMD_Instinct_MI300X``)."""

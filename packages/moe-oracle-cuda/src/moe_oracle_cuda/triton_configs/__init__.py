"""Tuned launch configs of core's Triton experts for NVIDIA GPUs, one JSON file per
(device, E, N, scheme); ``moe_oracle.triton.configs`` finds this folder through the
``moe_oracle.triton_configs`` entry point. Produced by ``bench/tune_triton.py``."""

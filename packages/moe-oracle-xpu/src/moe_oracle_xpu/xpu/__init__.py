"""The ``xpu`` backend: vllm-xpu-kernels' ``fused_moe_interface.XpuFusedMoe`` on Intel GPUs.

Files: ``spec`` (support rules, the ``BackendSpec``), ``converter`` (canonical -> the library's
``[E, K, N]`` / packed ``[E, N, K/2]`` layouts and back), ``experts`` (``XpuExperts``, the lazy
call into the library).
"""

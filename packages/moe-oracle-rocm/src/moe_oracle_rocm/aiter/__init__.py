"""The ``aiter`` backend: AMD AITER's fused MoE (``aiter.fused_moe``) on gfx942 / gfx950.

Files: ``spec`` (support rules and the ``BackendSpec``), ``layout`` (AITER's weight shuffles and
int4 packing in torch, each with its exact inverse), ``converter`` (canonical -> AITER layout per
scheme, and back), ``experts`` (``AiterExperts``, the lazy call into AITER), ``arch`` (which gfx a
device is). Only ``experts`` imports AITER, and only when a kernel runs.
"""

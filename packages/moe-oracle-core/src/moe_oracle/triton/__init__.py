"""Vendor-neutral Triton fused-MoE experts (``triton`` and ``batched_triton`` backends).

Data flow of one layer (standard format), every step a Triton kernel, no host synchronisation:

    topk_ids [T, K] --align--> sorted pair ids, one expert per BLOCK_M block
    hidden [T, H] --(quantize)--> GEMM1 with w13 [E, 2*I, H], fused activation (and quantization) -> [T*K, I]
    [T*K, I] --> GEMM2 with w2 [E, H, I], router weight applied -> [T*K, H] --sum over K--> [T, H]

``triton`` is an optional dependency: this package imports it only inside the modules that hold
kernels, so ``moe_oracle.triton.spec`` (what the registry reads) imports without it.
"""

"""The ``flashinfer_cutlass`` backend: FlashInfer's CUTLASS fused MoE (``cutlass_fused_moe``)."""

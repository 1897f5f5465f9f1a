"""The ``flashinfer_trtllm`` backend: FlashInfer's TensorRT-LLM-gen fused MoE (``trtllm_*_moe``)."""

"""Quantization formats: quantize/dequantize for every scheme, in torch (CPU and GPU)."""

"""Kernel structure: weights, quant configs, prepare/finalize, experts and the fused kernel."""

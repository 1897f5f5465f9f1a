"""The reference experts: float32, dequantized weights, written for clarity; the test oracle."""

"""Deployment variants of a trained case: merged, quantized after training, GGUF."""

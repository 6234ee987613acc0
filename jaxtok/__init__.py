"""jaxtok: discrete tokens in JAX: tokenizers, quantizers, generators and their samplers."""

__version__ = "0.1.0"

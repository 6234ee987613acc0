"""jaxtok: discrete tokens in JAX — tokenizers, generators, fast decoders and token-level RL."""

__version__ = "0.1.0"

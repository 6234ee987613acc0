"""Shared layers: attention (with KV cache), RoPE, transformer and convolutional blocks."""

from jaxtok.nn.attention import Attention, dot_product_attention
from jaxtok.nn.partitioning import logical_init
from jaxtok.nn.rope import apply_rope, rope_frequencies
from jaxtok.nn.transformer import Mlp, Transformer, TransformerBlock

__all__ = [
    "Attention",
    "Mlp",
    "Transformer",
    "TransformerBlock",
    "apply_rope",
    "dot_product_attention",
    "logical_init",
    "rope_frequencies",
]

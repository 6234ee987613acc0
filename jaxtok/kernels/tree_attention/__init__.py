"""Tree attention for speculative decoding: T draft-tree nodes attend to the prefix + ancestors."""

from jaxtok.kernels.tree_attention.ops import BlockSizes, tree_attention
from jaxtok.kernels.tree_attention.reference import tree_ancestor_mask

__all__ = ["BlockSizes", "tree_ancestor_mask", "tree_attention"]

"""Sparse VideoGen2 attention: semantic-aware permutation (k-means) + block-sparse attention."""

from jaxtok.kernels.block_sparse_attention.ops import (
    Plan,
    SparseAttention,
    SparseOptions,
    block_sparse_attention,
    plan_mask,
    plan_sparsity,
    svg2_attention,
)

__all__ = ["Plan", "SparseAttention", "SparseOptions", "block_sparse_attention", "plan_mask",
           "plan_sparsity", "svg2_attention"]

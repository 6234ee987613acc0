"""Fused nearest-codeword search: argmin_k d(z_n, c_k) without materialising the N x K matrix."""

from jaxtok.kernels.nearest_codeword.ops import BlockSizes, nearest_codeword

__all__ = ["BlockSizes", "nearest_codeword"]

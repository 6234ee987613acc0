"""Quantizers: z [..., D] -> (z_q, QuantizerOutput(codes, losses, metrics)).

``QUANTIZERS`` maps names to module classes so a task builds one by name + kwargs:

    q = QUANTIZERS.get("fsq")(levels=(8, 5, 5, 5))

Not in the registry (not trained modules): :class:`GaussianQuantizer` (post-training
Gaussian-quantile scalar quantization, which the registered ``gaussian_quantile`` bottleneck
wraps) and the latent perturbation functions.
"""

from jaxtok.quantizers.base import STATS, QuantizerOutput
from jaxtok.quantizers.binary import BinaryQuantizer
from jaxtok.quantizers.bsq import BSQ
from jaxtok.quantizers.fsq import FSQ
from jaxtok.quantizers.gaussian_quantile import GaussianQuantizer, gaussian_bins
from jaxtok.quantizers.grouped import GroupedVQ
from jaxtok.quantizers.latent_gaussian import LatentGaussianQuantizer
from jaxtok.quantizers.lfq import LFQ
from jaxtok.quantizers.perturbation import codebook_neighbors, perturb_codes
from jaxtok.quantizers.residual import ResidualVQ
from jaxtok.quantizers.simvq import SimVQ
from jaxtok.quantizers.vq import VectorQuantizer
from jaxtok.registry import Registry

QUANTIZERS: Registry = Registry("quantizer")
QUANTIZERS.register("vq", VectorQuantizer)
QUANTIZERS.register("rvq", ResidualVQ)
QUANTIZERS.register("grouped_vq", GroupedVQ)
QUANTIZERS.register("fsq", FSQ)
QUANTIZERS.register("lfq", LFQ)
QUANTIZERS.register("bsq", BSQ)
QUANTIZERS.register("binary", BinaryQuantizer)
QUANTIZERS.register("simvq", SimVQ)
QUANTIZERS.register("gaussian_quantile", LatentGaussianQuantizer)  # continuous, binned after

__all__ = [
    "BSQ",
    "FSQ",
    "LFQ",
    "QUANTIZERS",
    "STATS",
    "BinaryQuantizer",
    "GaussianQuantizer",
    "GroupedVQ",
    "LatentGaussianQuantizer",
    "QuantizerOutput",
    "ResidualVQ",
    "SimVQ",
    "VectorQuantizer",
    "codebook_neighbors",
    "gaussian_bins",
    "perturb_codes",
]

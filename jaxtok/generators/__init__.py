"""Generators: masked (MaskGIT/MDM) and autoregressive token models; samplers live in samplers/."""

from jaxtok.generators.masked import VARIANTS, MaskedTransformer, RecapFns, make_logits_fn

__all__ = ["VARIANTS", "MaskedTransformer", "RecapFns", "make_logits_fn"]

"""Samplers: pure functions over a logits callable, looped inside one jit."""

from jaxtok.generators.samplers.categorical import gumbel, gumbel_cap, sample_categorical
from jaxtok.generators.samplers.confidence import CONFIDENCES, confidence
from jaxtok.generators.samplers.deferred import deferred_commitment_sample
from jaxtok.generators.samplers.first_hitting import first_hitting_sample
from jaxtok.generators.samplers.maskgit import maskgit_sample
from jaxtok.generators.samplers.mdlm import ddpm_sample
from jaxtok.generators.samplers.recap import recap_sample
from jaxtok.generators.samplers.schedules import ALPHAS, SCHEDULES, mask_ratio
from jaxtok.generators.samplers.threshold import threshold_sample
from jaxtok.generators.samplers.token_critic import token_critic_sample

__all__ = [
    "ALPHAS", "CONFIDENCES", "SCHEDULES", "confidence", "ddpm_sample", "deferred_commitment_sample",
    "first_hitting_sample", "gumbel", "gumbel_cap", "mask_ratio", "maskgit_sample", "recap_sample",
    "sample_categorical", "threshold_sample", "token_critic_sample",
]

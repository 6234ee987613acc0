"""VQGAN baseline: 2D convolutional encoder/decoder, VQ on each latent cell, perceptual + PatchGAN.

  python -m jaxtok.main --config=configs/tokenizers/conv2d_vq.py --workdir=/tmp/jaxtok/conv2d_vq
  python -m jaxtok.main --config=configs/tokenizers/conv2d_vq.py:smoke --workdir=/tmp/jaxtok/c2s
  python -m jaxtok.main --config=configs/tokenizers/conv2d_vq.py:imagenet --workdir=gs://.../c2d

"Taming Transformers for High-Resolution Image Synthesis" (Esser et al., 2021). At 32 px
(natural_patches) the grid is 8x8 (``tokens=64``) or 4x4 (``tokens=16``); ImageNet-256 uses a
16x16 grid of a 1024-code VQ with L2 + perceptual + hinge GAN with LeCAM and an EMA of the weights.
Arguments: ``smoke``, ``imagenet``, ``tokens=64|16``, ``steps=N``, ``seed=S``, ``gan`` (switch the
adversarial loss on at 32 px, from half-way), ``depth=D`` (D >= 1: a residual VQ of D levels,
codes [B, h, w, D], as ResGen's generator needs; 0, the default: one VQ), ``gq=L`` (L >= 2: no VQ
but a continuous 16-channel latent binned per channel into L Gaussian quantiles after the fact,
TokenBridge's post-training quantisation: codes [B, h, w, 16], as CubiD's and TokenBridge's
generators need, configs/generators/digits_cubid.py).
"""

import ml_collections

from configs.common import tokenizer_base_config
from jaxtok.config_args import parse_arg

GRIDS = {64: (1, 2, 2), 16: (1, 2, 2, 2)}  # 32 px -> 8x8 or 4x4 cells


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, tokens=64, gan=False, depth=0,
                gq=0)
  if a.tokens not in GRIDS:
    raise ValueError(f"tokens must be one of {sorted(GRIDS)} at 32 px; got {a.tokens}")
  if a.depth < 0:
    raise ValueError(f"depth must be >= 1 (residual VQ levels) or 0 (one VQ); got {a.depth}")
  c = tokenizer_base_config(a)
  c.model = ml_collections.ConfigDict()
  c.model.kind = "conv2d"
  c.model.latent_dim = 8
  c.model.base_channels = 16 if a.smoke else 128 if a.imagenet else 32
  c.model.channel_mults = (1, 1, 2, 2, 4) if a.imagenet else GRIDS[a.tokens]
  c.model.num_res_blocks = 2 if a.imagenet else 1
  c.model.quantizer = ml_collections.ConfigDict({
      "name": "vq", "num_codes": 1024 if a.imagenet else 256, "dim": 8,
      "commitment_weight": 0.25, "kmeans_init": True, "dead_code_threshold": 0.1})
  if a.depth:
    c.model.quantizer.update(name="rvq", num_levels=a.depth)
  if a.gq:
    if a.gq < 2 or a.depth:
      raise ValueError(f"gq (Gaussian-quantile levels) must be >= 2 and exclude depth; got {a.gq}")
    # scripts/studies/cubid_tokenbridge.py's AE: 16 channels, latent noise 0.05, L2 1e-4, no VQ
    c.model.latent_dim = 16
    c.model.quantizer = ml_collections.ConfigDict({
        "name": "gaussian_quantile", "dim": 16, "levels": a.gq, "noise": 0.05, "l2": 1e-4})
  if a.smoke or a.gan:  # the adversarial part of the recipe (smoke: from step 1)
    if not a.smoke:  # (the perceptual loss costs 15 s of compile: tested on its own)
      c.loss.perceptual = 0.1
    c.gan.update(weight=0.1, start=1 if a.smoke else c.num_steps // 2, lecam=0.001)
    c.ema.decay = 0.99
  return c

"""RobusTok latent perturbation: train the decoder on codes swapped for nearby codewords.

  python -m jaxtok.main --config=configs/tokenizers/robustok.py --workdir=/tmp/jaxtok/robustok
  python -m jaxtok.main --config=configs/tokenizers/robustok.py:perturb=False \\
      --workdir=/tmp/jaxtok/robustok_off
  python -m jaxtok.main --config=configs/tokenizers/robustok.py:smoke --workdir=/tmp/jaxtok/rt_s
  python -m jaxtok.main --config=configs/tokenizers/robustok.py:imagenet --workdir=gs://.../rt

"Robust Latent Matters: Boosting Image Generation with Sampling Error Synthesis" (Qiu et al.,
2025), Sec. 3: in a fraction beta of the batch, each token is swapped with probability alpha for
one of the delta nearest codewords of its own codeword (delta = 100 with 4096 codes in the paper,
16 of 256 here; alpha annealed, here linearly from ``alpha`` to ``alpha_end``). The report adds
the perturbed-latent evaluation: PSNR and FD-ENL0 of reconstructions from perturbed codes (every
image, each code swapped with prob ``report.pfd_alpha``): pFID-style, on EfficientNet-Lite0.
Model: the conv2d VQ tokenizer of configs/tokenizers/conv2d_vq.py.
Arguments: ``smoke``, ``imagenet``, ``perturb`` (default on), ``steps=N``, ``seed=S``.
"""

import ml_collections

from configs.common import tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, perturb=True)
  c = tokenizer_base_config(a)
  c.model = ml_collections.ConfigDict()
  c.model.kind = "conv2d"
  c.model.latent_dim = 8
  c.model.base_channels = 16 if a.smoke else 128 if a.imagenet else 32
  c.model.channel_mults = (1, 1, 2, 2, 4) if a.imagenet else (1, 2, 2)
  c.model.num_res_blocks = 2 if a.imagenet else 1
  k = 4096 if a.imagenet else 256
  c.model.quantizer = ml_collections.ConfigDict({
      "name": "vq", "num_codes": k, "dim": 8, "commitment_weight": 0.25, "kmeans_init": True,
      "dead_code_threshold": 0.1})
  delta = 100 if a.imagenet else 16
  c.perturb.update(enabled=a.perturb, alpha=0.5, alpha_end=0.1, fraction=0.1 if a.imagenet
                   else 0.25, delta=delta)
  c.report.update(pfd=True, pfd_alpha=0.1, pfd_delta=delta, fd=True,
                  fd_image_size=224 if a.imagenet else 64, max_fd_images=50_000 if a.imagenet
                  else 256)
  if a.smoke:  # features at 32 px of 64 images: the code path in seconds, not a measurement
    c.report.update(fd_image_size=32, max_fd_images=64)
  return c

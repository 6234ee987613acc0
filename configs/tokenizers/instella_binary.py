"""Instella-T2I binary 1D latents: a ViT over patches + latents, 64 Bernoulli bits per token.

  python -m jaxtok.main --config=configs/tokenizers/instella_binary.py --workdir=/tmp/jaxtok/bin
  python -m jaxtok.main --config=configs/tokenizers/instella_binary.py:smoke \\
      --workdir=/tmp/jaxtok/bin_smoke
  python -m jaxtok.main --config=configs/tokenizers/instella_binary.py:imagenet \\
      --workdir=gs://.../instella_binary

"Instella-T2I" (AMD, 2025): b = Bernoulli(sigmoid(l / tau)) with the straight-through estimator
b + s - sg(s) in training, [s > 0.5] in evaluation, regulariser mean(s (1 - s)); the decoder embeds
the bit vectors linearly. (The paper's 128 tokens per 1024^2 image; ImageNet-256 uses 128 tokens.)
The report gives bits per image and the mean per-bit entropy.
Arguments: ``smoke``, ``imagenet``, ``variant``, ``tokens``, ``bits=N``, ``steps=N``, ``seed=S``.
"""

import ml_collections

from configs.common import titok_model_config, tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, variant="cpu", tokens=16,
                bits=16)
  if a.imagenet:
    a.tokens, a.bits = (128 if a.tokens == 16 else a.tokens), (64 if a.bits == 16 else a.bits)
  c = tokenizer_base_config(a)
  c.model = titok_model_config(a, {"name": "binary", "num_bits": a.bits, "temperature": 1.0,
                                   "reg_weight": 0.01})
  return c

"""TiTok: a ViT tokenizer of an image into 32/64/128 1D tokens (VQ, 12-d codes).

  python -m jaxtok.main --config=configs/tokenizers/titok.py --workdir=/tmp/jaxtok/titok
  python -m jaxtok.main --config=configs/tokenizers/titok.py:smoke --workdir=/tmp/jaxtok/tt_smoke
  python -m jaxtok.main --config=configs/tokenizers/titok.py:imagenet,variant=L,tokens=32 \\
      --workdir=gs://.../titok_l32

"An Image is Worth 32 Tokens for Reconstruction and Generation" (Yu et al., 2024), the
single-stage recipe (L2 + perceptual + GAN) rather than the two-stage proxy-code one. At 32 px the
ViT runs on 4x4 patches (64 patches); ``variant=cpu`` is a small ViT for this CPU (width 64,
depth 2), ``tiny|S|B|L`` are the size table of ``jaxtok.tokenizers.titok.VARIANTS``.
Arguments: ``smoke``, ``imagenet``, ``variant=cpu|tiny|S|B|L``, ``tokens=N`` (0 = the paper's
count for the variant: L-32, B-64, S-128), ``steps=N``, ``seed=S``. The reference code's
architecture choices are ``model.pixel_head``, ``model.gelu``, ``model.ln_pre`` and
``model.quantizer.distance=cosine``; at ``tokens=32`` here ``--config.model.ln_pre=True`` gained
0.76 dB held-out PSNR in two seeds (docs/tokenizers.md, "Reference options"; it costs 0.3-0.4 dB
on the ordered 16-token configs).
"""

import ml_collections

from configs.common import titok_model_config, tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, variant="cpu", tokens=0)
  c = tokenizer_base_config(a)
  c.model = titok_model_config(a, {"name": "vq", "num_codes": 4096 if a.imagenet else 256,
                                   "dim": 12, "commitment_weight": 0.25, "kmeans_init": True,
                                   "dead_code_threshold": 0.1})
  return c

"""Matryoshka (M3) nested token pooling: one tokenizer, several granularities chosen at inference.

  python -m jaxtok.main --config=configs/tokenizers/matryoshka.py --workdir=/tmp/jaxtok/m3
  python -m jaxtok.main --config=configs/tokenizers/matryoshka.py:kind=titok \\
      --workdir=/tmp/jaxtok/m3_titok
  python -m jaxtok.main --config=configs/tokenizers/matryoshka.py:smoke --workdir=/tmp/jaxtok/m3s
  python -m jaxtok.main --config=configs/tokenizers/matryoshka.py:imagenet --workdir=gs://.../m3

"Matryoshka Multimodal Models" (Cai et al., 2024): the pre-quantization latents are average-pooled
to nested scales (2D: 8x8 -> 4x4 -> 2x2 -> 1x1 cells; 1D: K -> K/2 -> ... tokens), each scale is
quantized and decoded by the same decoder, and training minimises the mean loss over scales. The
report has ``test/psnr@s`` per scale and the rate-distortion plot.
Arguments: ``smoke``, ``imagenet``, ``kind=conv2d|titok``, ``steps=N``, ``seed=S``.
"""

import ml_collections

from configs.common import titok_model_config, tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, kind="conv2d",
                variant="cpu", tokens=16)
  c = tokenizer_base_config(a)
  fsq = {"name": "fsq", "levels": (8, 5, 5, 5)}
  if a.kind == "titok":
    tokens = a.tokens if not a.imagenet else 256
    a.tokens = 8 if a.smoke else tokens
    sizes = tuple(n for n in (a.tokens // 2, a.tokens // 4, a.tokens // 8, 1) if n >= 1)
    c.model = titok_model_config(a, fsq, matryoshka_sizes=tuple(sorted(set(sizes))))
  elif a.kind == "conv2d":
    c.model = ml_collections.ConfigDict()
    c.model.kind = "conv2d"
    c.model.image_size = c.data.image_size
    c.model.latent_dim = 4
    c.model.base_channels = 128 if a.imagenet else 16 if a.smoke else 32
    c.model.channel_mults = (1, 1, 2, 2, 4) if a.imagenet else (1, 2, 2)
    c.model.num_res_blocks = 2 if a.imagenet else 1
    c.model.matryoshka_sizes = (8, 4, 2, 1) if a.imagenet else (4, 2, 1)
    c.model.quantizer = ml_collections.ConfigDict(fsq)
  else:
    raise ValueError(f"kind must be conv2d or titok; got {a.kind!r}")
  c.report.rate_distortion = True
  return c

"""GPSToken: an image as N 2D Gaussians (mean, covariance, texture) splatted for a conv decoder.

  python -m jaxtok.main --config=configs/tokenizers/gpstoken.py --workdir=/tmp/jaxtok/gpstoken
  python -m jaxtok.main --config=configs/tokenizers/gpstoken.py:smoke --workdir=/tmp/jaxtok/gps_s
  python -m jaxtok.main --config=configs/tokenizers/gpstoken.py:imagenet,tokens=128 \\
      --workdir=gs://.../gpstoken_m128

"GPSToken: Gaussian Parameterized Spatially-adaptive Tokenization for Image Representation and
Generation" (2025): entropy-balanced initial region split -> Gaussians refined by a transformer,
textures from box-averaged encoder features, rendered by the differentiable splatting renderer
into a feature map decoded by a CNN. Tokens are continuous as in the paper (no quantizer), so the
report has PSNR/SSIM but no codebook statistics. ``fsq`` quantizes the tokens with FSQ instead.
Arguments: ``smoke``, ``imagenet``, ``tokens=N`` (a power of two), ``fsq``, ``steps=N``,
``seed=S``.
"""

import ml_collections

from configs.common import tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, tokens=16, fsq=False)
  c = tokenizer_base_config(a)
  c.model = ml_collections.ConfigDict()
  c.model.kind = "gpstoken"
  c.model.image_size = c.data.image_size
  c.model.num_tokens = 128 if a.imagenet and a.tokens == 16 else a.tokens
  c.model.texture_dim = 16
  c.model.base_channels = 64 if a.imagenet else 16
  c.model.channel_mults = (1, 2, 2, 4) if a.imagenet else (1, 2, 2)
  c.model.width = 256 if a.imagenet else 64
  c.model.depth = 4 if a.imagenet else (1 if a.smoke else 2)
  c.model.num_heads = 4
  c.model.mlp_dim = 4 * c.model.width
  c.model.quantizer = None
  if a.fsq:  # 5 geometry + 16 texture dims, 5 levels each (FSQ bounds every dim to [-1, 1])
    c.model.quantizer = ml_collections.ConfigDict({"name": "fsq", "levels": (5,) * 21})
  return c

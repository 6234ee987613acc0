"""The premium pictures (jaxtok.tokenizers.text.plots): bars coloured by script group, with heights
proportional to the premiums, and one line per script against vocabulary size."""

import numpy as np
from PIL import Image

from jaxtok.tokenizers.text import plots


def _pixels(path, hex_color):
  rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
  want = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
  return int((np.abs(rgb - want).sum(-1) <= 6).sum())


def test_premium_bars_heights_follow_the_premiums(tmp_path):
  path = str(tmp_path / "bars.png")
  groups = {"es": "Latin", "ru": "Cyrillic", "ar": "Arabic"}
  plots.premium_bars(path, {"bpe": {"es": 1.0, "ru": 2.0, "ar": 3.0}}, groups)
  counts = [_pixels(path, plots.GROUP_COLORS[g]) for g in ("Latin", "Cyrillic", "Arabic")]
  assert counts[0] < counts[1] < counts[2], counts
  # bar area is proportional to height (the legend patches add a little of each colour)
  assert 2.3 < counts[2] / counts[0] < 3.2, counts


def test_premium_vs_vocab_draws_one_curve_per_script(tmp_path):
  path = str(tmp_path / "vocab.png")
  curves = {256: {"en": 1.0, "es": 1.2, "ru": 2.0}, 512: {"en": 1.0, "es": 1.1, "ru": 1.5}}
  plots.premium_vs_vocab(path, {"bpe": curves}, {"en": "Latin", "es": "Latin", "ru": "Cyrillic"})
  image = np.asarray(Image.open(path).convert("RGB"))
  assert image.shape[0] > 100 and image.shape[1] > 100
  # tab10's first two colours: one curve for Cyrillic, one for Latin (English left out)
  assert _pixels(path, "#1f77b4") > 20 and _pixels(path, "#ff7f0e") > 20

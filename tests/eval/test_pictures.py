"""Picture helpers and the JPEG/WebP rate-distortion baselines."""

import os

import numpy as np
import pytest
from PIL import Image
from skimage import data

from jaxtok.eval import pictures, rate_distortion


def test_reconstruction_grid_puts_originals_above_reconstructions(tmp_path):
  a = np.full((3, 4, 5, 3), -1.0, np.float32)  # black originals
  b = np.full((3, 4, 5, 3), 1.0, np.float32)  # white reconstructions
  path = str(tmp_path / "grid.png")
  canvas = pictures.reconstruction_grid(a, b, path=path)
  pad = 2
  assert canvas.shape == (2 * (4 + pad) + pad, 3 * (5 + pad) + pad, 3)
  assert np.all(canvas[pad:pad + 4, pad:pad + 5] == 0)
  assert np.all(canvas[2 * pad + 4:2 * pad + 8, pad:pad + 5] == 255)
  # Small canvases are saved enlarged by an integer factor (nearest neighbour): every s-th pixel
  # of the file is the canvas.
  saved = np.asarray(Image.open(path))
  s = saved.shape[0] // canvas.shape[0]
  assert s >= 2 and saved.shape == (canvas.shape[0] * s, canvas.shape[1] * s, 3)
  np.testing.assert_array_equal(saved[::s, ::s], canvas)
  with pytest.raises(ValueError, match="same shape"):
    pictures.reconstruction_grid(a, b[:2])


def test_prefix_lengths_and_strip_columns():
  assert pictures.prefix_lengths(8) == [1, 2, 4, 8]
  assert pictures.prefix_lengths(6) == [1, 2, 4, 6]
  assert pictures.prefix_lengths(1) == [1]
  codes = np.zeros((2, 8), np.int32)
  seen = []

  def decode(prefix):  # brightness encodes the prefix length
    seen.append(prefix.shape[1])
    return np.full((2, 4, 4, 3), prefix.shape[1] / 8 * 2 - 1, np.float32)

  canvas = pictures.prefix_decoding_strip(decode, codes, originals=np.ones((2, 4, 4, 3)))
  assert seen == [1, 2, 4, 8]
  assert canvas.shape == (2 * 6 + 2, 5 * 6 + 2, 3)  # 2 rows, 4 prefixes + original
  values = [canvas[2, 2 + 6 * j, 0] for j in range(5)]
  assert values == sorted(values) and values[-1] == 255


def test_codec_at_bytes_respects_budget_and_quality_rises_with_budget(tmp_path):
  img = data.astronaut()[::8, ::8]  # 64x64
  small = rate_distortion.codec_at_bytes(img, "jpeg", 1500)
  large = rate_distortion.codec_at_bytes(img, "jpeg", 4000)
  assert small[1] <= 1500 and large[1] <= 4000
  assert large[2] > small[2]
  # Below JPEG's header overhead no quality fits: quality 1 comes back with its true size.
  dec, size, quality = rate_distortion.codec_at_bytes(img, "jpeg", 100)
  assert quality == 1 and size > 100 and dec.shape == img.shape
  with pytest.raises(ValueError, match="unknown codec"):
    rate_distortion.encode_with_codec(img, "gif", 50)


def test_codec_rate_distortion_and_plot(tmp_path):
  imgs = np.stack([data.astronaut()[::8, ::8], data.coffee()[:256:4, :256:4]])
  imgs = imgs.astype(np.float32) / 127.5 - 1
  budgets = [64 * 64 * 2.0, 64 * 64 * 4.0]  # 2 and 4 bits per pixel
  pts = rate_distortion.codec_rate_distortion(imgs, budgets)
  for codec in ("jpeg", "webp"):
    (bpp_lo, psnr_lo), (bpp_hi, psnr_hi) = pts[codec]
    assert bpp_lo <= 2.0 and bpp_hi <= 4.0
    assert psnr_hi > psnr_lo > 15
  path = rate_distortion.plot_rate_distortion(
      {**pts, "tokenizer": [(0.1, 20.0), (0.3, 23.0)]}, str(tmp_path / "rd.png"))
  assert os.path.getsize(path) > 1000

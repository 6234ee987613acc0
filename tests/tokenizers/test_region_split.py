"""Entropy map and the entropy-balanced region split of GPSToken's initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.tokenizers.region_split import (
  boxes_to_gaussians,
  entropy_balanced_split,
  local_entropy,
)


def test_local_entropy_closed_forms():
  flat = jnp.zeros((1, 8, 8, 3))
  np.testing.assert_allclose(local_entropy(flat, bins=4, window=3), 0.0, atol=1e-6)
  # A checkerboard of two grey levels: every 3x3 window holds 4 or 5 of each -> H(4/9) or H(5/9).
  board = (np.indices((8, 8)).sum(0) % 2).astype(np.float32) * 1.0 - 0.5
  e = np.asarray(local_entropy(jnp.asarray(board)[None, ..., None].repeat(3, -1), 4, 3))
  p = 4 / 9
  h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
  np.testing.assert_allclose(e[0, 1:-1, 1:-1], h, rtol=1e-5)


def test_split_tiles_the_image_and_follows_the_entropy():
  rng = np.random.default_rng(0)
  img = np.zeros((1, 32, 32, 3), np.float32)
  img[:, :, 16:] = rng.uniform(-1, 1, (1, 32, 16, 1))  # flat left half, noisy right half
  ent = local_entropy(jnp.asarray(img))
  boxes = np.asarray(jax.jit(entropy_balanced_split, static_argnums=1)(ent, 16))
  assert boxes.shape == (1, 16, 4)
  cover = np.zeros((32, 32), int)
  for y0, x0, y1, x1 in boxes[0]:
    assert y1 > y0 and x1 > x0
    cover[y0:y1, x0:x1] += 1
  np.testing.assert_array_equal(cover, 1)  # a partition: every pixel in exactly one box
  centres_x = (boxes[0, :, 1] + boxes[0, :, 3]) / 2
  assert np.sum(centres_x > 16) >= 12  # most regions sit in the detailed half


def test_flat_image_splits_into_equal_areas_and_gaussians_match_boxes():
  boxes = entropy_balanced_split(jnp.zeros((2, 16, 16)), 4)
  areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
  np.testing.assert_array_equal(areas, 64)
  means, scales, rho = boxes_to_gaussians(jnp.asarray([[[0, 0, 16, 16]]]), 16, 16)
  np.testing.assert_allclose(means, [[[0.5, 0.5]]])
  np.testing.assert_allclose(scales, [[[1 / np.sqrt(12)] * 2]], rtol=1e-6)  # sd of U[0, 1]
  np.testing.assert_array_equal(rho, 0.0)
  with pytest.raises(ValueError, match="power of two"):
    entropy_balanced_split(jnp.zeros((1, 8, 8)), 6)

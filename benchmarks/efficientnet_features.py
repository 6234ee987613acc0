"""EfficientNet-Lite0 pooled-feature extraction: jitted JAX vs a plain numpy forward.

    python benchmarks/efficientnet_features.py [--batch 16] [--repeats 5]

Both run the same pretrained weights (``jaxtok.pretrained.efficientnet``) on the same batch of
224x224 images in one process; the numpy baseline is a straightforward implementation (1x1 convs
as matmuls, the stem by im2col, depthwise convs as k*k shifted multiply-adds, TF SAME padding,
BatchNorm folded at run time). Prints images/s for each, their ratio, the feature agreement and
the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.pretrained import efficientnet
from jaxtok.pretrained.torch_pickle import load_torch_pickle


def _same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:  # [B, H, W, C], TF SAME padding
  def amounts(n):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2

  return np.pad(x, ((0, 0), amounts(x.shape[1]), amounts(x.shape[2]), (0, 0)))


def _bn(x, sd, prefix):
  scale = sd[f"{prefix}.weight"] / np.sqrt(sd[f"{prefix}.running_var"] + efficientnet.BN_EPS)
  return x * scale + (sd[f"{prefix}.bias"] - sd[f"{prefix}.running_mean"] * scale)


def _relu6(x):
  return np.clip(x, 0.0, 6.0)


def _conv1x1(x, w):  # w [O, I, 1, 1]
  return x @ w[:, :, 0, 0].T


def _conv_full(x, w, s):  # dense kxk conv by im2col; w [O, I, k, k]
  k = w.shape[-1]
  xp = _same_pad(x, k, s)
  b, h, wd = x.shape[0], -(-x.shape[1] // s), -(-x.shape[2] // s)
  cols = [xp[:, i:i + s * h:s, j:j + s * wd:s, :] for i in range(k) for j in range(k)]
  patches = np.concatenate(cols, axis=-1)  # [B, h, w, k*k*I], (i, j, c) order
  wmat = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])  # [(i, j, c), O]
  return (patches.reshape(-1, patches.shape[-1]) @ wmat).reshape(b, h, wd, -1)


def _depthwise(x, w, s):  # w [C, 1, k, k]
  k = w.shape[-1]
  xp = _same_pad(x, k, s)
  h, wd = -(-x.shape[1] // s), -(-x.shape[2] // s)
  out = np.zeros((x.shape[0], h, wd, x.shape[3]), x.dtype)
  for i in range(k):
    for j in range(k):
      out += xp[:, i:i + s * h:s, j:j + s * wd:s, :] * w[:, 0, i, j]
  return out


def numpy_features(sd: dict, images: np.ndarray) -> np.ndarray:  # [B, 224, 224, 3] in [-1, 1]
  x = ((images + 1.0) * 0.5 * 255.0 - 127.0) / 128.0
  x = _relu6(_bn(_conv_full(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
  for i, (_, s, e, cin, cout) in enumerate(efficientnet.block_specs()):
    p = f"_blocks.{i}"
    h = x
    if e != 1:
      h = _relu6(_bn(_conv1x1(h, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
    h = _relu6(_bn(_depthwise(h, sd[f"{p}._depthwise_conv.weight"], s), sd, f"{p}._bn1"))
    h = _bn(_conv1x1(h, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
    x = h + x if (s == 1 and cin == cout) else h
  x = _relu6(_bn(_conv1x1(x, sd["_conv_head.weight"]), sd, "_bn1"))
  return x.mean(axis=(1, 2))


def _time(fn, repeats):
  fn()  # warm-up (compilation for JAX)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  sd = {k: np.asarray(v, np.float32) for k, v in
        load_torch_pickle(efficientnet.weights_path()).items()}
  model, variables = efficientnet.load_efficientnet_lite0()
  images = np.random.default_rng(0).uniform(-1, 1, (args.batch, 224, 224, 3)).astype(np.float32)
  x = jnp.asarray(images)
  fwd = jax.jit(lambda v, x: efficientnet.features(model, v, x, image_size=None))

  feats_jax = np.asarray(fwd(variables, x))
  feats_np = numpy_features(sd, images)
  rel = np.abs(feats_jax - feats_np).max() / np.abs(feats_np).max()

  t_np = _time(lambda: numpy_features(sd, images), args.repeats)
  t_jax = _time(lambda: fwd(variables, x).block_until_ready(), args.repeats)

  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, numpy {np.__version__}")
  print(f"EfficientNet-Lite0 pooled features, 224x224, batch {args.batch}, "
        f"median of {args.repeats}")
  print(f"  numpy baseline : {args.batch / t_np:8.1f} images/s  ({t_np * 1e3:8.1f} ms/batch)")
  print(f"  jaxtok (jit)   : {args.batch / t_jax:8.1f} images/s  ({t_jax * 1e3:8.1f} ms/batch)")
  print(f"  ratio jax/numpy: {t_np / t_jax:8.2f}x")
  print(f"  max |feature difference| / max |feature| = {rel:.2e}")


if __name__ == "__main__":
  main()

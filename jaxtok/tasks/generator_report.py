"""The generator report's measurements and pictures: class accuracy, Frechet distances, the
real-image floor and the unmasking-order strip (used by :mod:`jaxtok.tasks.generator`).

Class accuracy uses :class:`ImageClassifier`, a small conv net trained on the real training
images (``grey`` averages the colour channels, for digits). Frechet distances are taken on its
penultimate features or on EfficientNet-Lite0 pooled features (FD-ENL0,
:mod:`jaxtok.eval.frechet`; not comparable to Inception FID). Real images are read at most
``max_images`` per split, so the report's memory stays bounded on ImageNet-sized sets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok.data.pipeline import make_iterator
from jaxtok.eval.frechet import efficientnet_feature_fn, frechet_distance_features
from jaxtok.eval.image_metrics import to_float
from jaxtok.eval.pictures import save_png, tile


class ImageClassifier(nn.Module):
  """A small conv net on [B, S, S, 3] images in [-1, 1]: (logits [B, C], features [B, F]).

  Stride-2 3x3 convolutions (``channels``), a ReLU layer of ``features`` units (the FD features)
  and a linear head; ``grey`` averages the colour channels first (digits are grey).
  """

  num_classes: int = 10
  channels: tuple[int, ...] = (16, 32)
  features: int = 64
  grey: bool = False

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"ImageClassifier wants images [B, S, S, 3], got {x.shape}")
    if self.grey:
      x = jnp.mean(x, axis=-1, keepdims=True)
    for ch in self.channels:
      x = nn.relu(nn.Conv(ch, (3, 3), strides=(2, 2))(x))
    x = x.reshape(x.shape[0], -1)
    feats = nn.relu(nn.Dense(self.features)(x))
    return nn.Dense(self.num_classes)(feats), feats


def train_classifier(images, labels, *, num_classes: int, steps: int, batch_size: int, lr: float,
                     seed: int = 0, **fields):
  """Trains :class:`ImageClassifier` (``fields``: its options) on uint8 images [N, S, S, 3];
  returns ``apply(images in [-1, 1]) -> (logits, features)`` as numpy."""
  clf = ImageClassifier(num_classes=num_classes, **fields)
  x_all = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
  y_all = jnp.asarray(labels, jnp.int32)
  params = clf.init(jax.random.PRNGKey(seed), x_all[:1])["params"]
  tx = optax.adam(lr)

  @jax.jit  # the images are an argument: as a closed-over constant they would bloat the HLO
  def train(params, key, x_all, y_all):
    def step(carry, k):
      params, opt_state = carry
      idx = jax.random.randint(k, (batch_size,), 0, len(y_all))

      def loss_fn(p):
        logits, _ = clf.apply({"params": p}, x_all[idx])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_all[idx]).mean()

      updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    return jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))[0][0]

  params = train(params, jax.random.PRNGKey(seed), x_all, y_all)
  apply = jax.jit(lambda x: clf.apply({"params": params}, x))
  return lambda imgs: jax.device_get(apply(jnp.asarray(imgs, jnp.float32)))


def commit_steps(inputs: np.ndarray) -> np.ndarray:
  """The step at which each token was committed, from the sampler's per-step inputs [T, B, N]
  (``True`` where still masked when step t was called): int [B, N] in [0, T)."""
  masked = np.asarray(inputs)  # [T, B, N]
  # A token masked at the input of step t and unmasked at the input of t + 1 was committed at t.
  still = np.concatenate([masked[1:], np.zeros_like(masked[:1])], axis=0)  # after step t
  committed_at = masked & ~still
  return np.argmax(committed_at, axis=0)


def unmasking_strip(steps: np.ndarray, grid: tuple[int, int], images: np.ndarray,
                    num_steps: int) -> np.ndarray:
  """Rows of [grid after step 0, ..., after step T-1, decoded image] as a uint8 canvas."""
  h, w = grid
  size = images.shape[1]
  rows = []
  for row_steps, image in zip(steps, images):
    panels = []
    for t in range(num_steps):
      s = row_steps.reshape(h, w)
      v = np.where(s == t, 1.0, np.where(s < t, 0.0, -1.0))  # new: white, old: grey, masked
      v = np.kron(v, np.ones((size // h, size // w)))
      panels.append(np.repeat(v[..., None], 3, axis=-1))
    panels.append(np.asarray(image, np.float32))
    rows.append(np.stack(panels))
  return tile(rows)


def timed_call(fn: Callable[..., Any], *args) -> tuple[Any, float, Any]:
  """(outputs, seconds, compiled) of one call of ``jax.jit(fn)(*args)``, compiled first so
  the time is the program's alone."""
  compiled = jax.jit(fn).lower(*args).compile()
  start = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  return out, time.perf_counter() - start, compiled


def save_class_grid(images: np.ndarray, per_class: int, path: str, columns: int = 0) -> None:
  """[C * k, S, S, 3] samples, k per class in order, as one row per class (the first
  ``columns`` of each when > 0)."""
  rows = images.reshape((-1, per_class) + images.shape[1:])
  save_png(tile(list(rows[:, :columns] if columns else rows)), path)


def class_accuracy_and_fd(config, rep_cfg, clf_cfg, images: dict[str, np.ndarray], labels,
                          classes: np.ndarray, num_classes: int,
                          eval_split: str) -> dict[str, float]:
  """``gen/<sampler>/{class_accuracy, fd_*}`` and the classifier's own accuracy, reading at most
  ``rep_cfg.max_real_images`` real images per split (``images``: sampler -> [C * k, S, S, 3] in
  [-1, 1]). The FD reference is the train split or ``eval_split`` (``rep_cfg.fd_reference``)."""
  cap = int(rep_cfg.max_real_images)
  ref_split = "train" if rep_cfg.fd_reference == "train" else eval_split
  out = {}
  classify = None
  if int(clf_cfg.steps) > 0:
    train_x, train_y, train_i = real_images(config, "train", cap)
    clf_kwargs = {k: v for k, v in dict(clf_cfg).items() if k != "holdout_every"}
    clf_kwargs["channels"] = tuple(clf_kwargs["channels"])
    if clf_cfg.holdout_every:  # honest accuracy without a test split of the same classes
      held = train_i % int(clf_cfg.holdout_every) == 0
      classify = train_classifier(train_x[~held], train_y[~held], num_classes=num_classes,
                                  **clf_kwargs, seed=config.seed)
      check_x, check_y, key = train_x[held], train_y[held], "gen/classifier_heldout_accuracy"
    else:
      classify = train_classifier(train_x, train_y, num_classes=num_classes, **clf_kwargs,
                                  seed=config.seed)
      check_x, check_y, _ = real_images(config, eval_split, cap)
      key = "gen/classifier_test_accuracy"
    out[key] = float(np.mean(np.argmax(classify(to_float(check_x))[0], -1) == check_y))
    del train_x, check_x
  ref_x, ref_y, ref_i = real_images(config, ref_split, cap)
  keep = np.isin(ref_y, classes)
  ref_x, ref_i = ref_x[keep][:rep_cfg.fd_reference_count], ref_i[keep][:rep_cfg.fd_reference_count]
  if rep_cfg.fd == "enl0":
    features = efficientnet_feature_fn(image_size=int(rep_cfg.fd_image_size))
  else:
    features = lambda x: classify(x)[1]  # noqa: E731
  ref_feats = features_of(features, ref_x)
  # The floor a perfect generator would reach at this sample size: as many real training images
  # per class as there are samples, none of them in the reference set.
  real = real_floor(config, labels, np.unique(ref_i) if ref_split == "train" else None, cap)
  if real is not None:
    out[f"gen/real/fd_{rep_cfg.fd}"] = frechet_distance_features(features_of(features, real),
                                                                 ref_feats)
  for name, imgs in images.items():
    if classify is not None:
      out[f"gen/{name}/class_accuracy"] = float(np.mean(
          np.argmax(classify(imgs)[0], -1) == np.asarray(labels)))
    out[f"gen/{name}/fd_{rep_cfg.fd}"] = frechet_distance_features(
        np.asarray(features(imgs), np.float64), ref_feats)
  return out


def real_floor(config, labels, exclude: np.ndarray | None, cap: int) -> np.ndarray | None:
  """Real training images with the classes of ``labels`` (one per label), none with an index in
  ``exclude``: uint8 [len(labels), S, S, 3], or None when some class has too few."""
  x, y, index = real_images(config, "train", cap)
  if exclude is not None:
    x, y = x[~np.isin(index, exclude)], y[~np.isin(index, exclude)]
  picked = []
  for c, n in zip(*np.unique(np.asarray(labels), return_counts=True), strict=True):
    rows = np.flatnonzero(y == c)[:n]
    if len(rows) < n:
      return None
    picked.append(x[rows])
  return np.concatenate(picked)


def features_of(features, images: np.ndarray, chunk: int = 1024) -> np.ndarray:
  """``features`` of uint8 images [N, S, S, 3], converted to [-1, 1] ``chunk`` at a time (a float
  copy of 10k ImageNet images would be 7.9 GB): float64 [N, F]."""
  return np.concatenate([np.asarray(features(to_float(images[i:i + chunk])), np.float64)
                         for i in range(0, max(len(images), 1), chunk)])


def real_images(config, split: str, max_images: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(images uint8 [N, S, S, 3], labels [N], index [N]) of the first ``max_images`` examples of
  ``split`` in record order (the whole split when it is smaller), sorted by index."""
  kwargs = dict(config.data)
  name = kwargs.pop("name")
  imgs, labels, index = [], [], []
  count = 0
  for b in make_iterator(name, split, global_batch_size=256, seed=0, shuffle=False,
                         num_epochs=1, process_index=0, process_count=1, **kwargs):
    real = np.asarray(b["mask"])
    imgs.append(np.asarray(b["image"])[real][:max_images - count])
    labels.append(np.asarray(b["label"])[real][:max_images - count])
    index.append(np.asarray(b["index"])[real][:max_images - count])
    count += len(imgs[-1])
    if count >= max_images:
      break
  order = np.argsort(np.concatenate(index), kind="stable")  # by index: a fixed order
  return tuple(np.concatenate(a)[order] for a in (imgs, labels, index))

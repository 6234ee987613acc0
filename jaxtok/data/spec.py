"""``DatasetSpec``: what ``DATASETS`` maps a name to.

A spec is a small frozen record: where the data comes from (a local builder generated on first
use, or a tfds name prepared beforehand under ``data_dir``), its splits, its default image size,
the number of classes, and how its images are brought to ``image_size``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# How a data set's images are brought to the requested [S, S, 3] uint8 (see preprocess.py):
#   none:               local builders -- the image size selects the builder config;
#   resize:             fixed-size sets (cifar, mnist): grey -> RGB, bilinear resize if needed;
#   center_crop_resize: variable-size sets (imagenet): central square, then bilinear resize.
PREPROCESSING = ("none", "resize", "center_crop_resize")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One data set.

  Attributes:
    name: the jaxtok name (the ``DATASETS`` key).
    tfds_name: the tfds builder name (``'natural_patches'``, ``'imagenet2012'``, ...).
    splits: valid split names.
    image_size: the default side S of the [S, S, 3] images.
    num_classes: number of labels in ``'label'``, or None when there is no label.
    preprocessing: one of ``PREPROCESSING``.
    builder: the local builder class (embedded data, generated on first use), or None for a
      tfds data set that must already be prepared under ``data_dir``.
    keys: the features kept (None: all); tfds sets carry string ids we drop.
    description: one line for listings.
    modality: ``'image'`` (examples carry 'image' [S, S, 3]; ``image_size`` is S) or
      ``'tokens'`` (examples carry 'tokens' [L]; the pipeline's ``image_size`` / ``seq_len``
      is L, the sequence length, which selects the builder config) or ``'records'`` (examples
      carry task-specific numeric fields, e.g. a problem's operands; ``image_size`` is the
      builder's size parameter, e.g. the number of digits).
  """

  name: str
  tfds_name: str
  splits: tuple[str, ...]
  image_size: int
  num_classes: int | None
  preprocessing: str = "none"
  builder: Any = None
  keys: tuple[str, ...] | None = None
  description: str = ""
  modality: str = "image"

  def __post_init__(self):
    if self.preprocessing not in PREPROCESSING:
      raise ValueError(f"dataset {self.name!r}: preprocessing must be one of {PREPROCESSING}; "
                       f"got {self.preprocessing!r}")
    if self.modality not in ("image", "tokens", "records"):
      raise ValueError(f"dataset {self.name!r}: modality must be 'image', 'tokens' or "
                       f"'records'; got {self.modality!r}")
    if not self.splits:
      raise ValueError(f"dataset {self.name!r}: no splits given")
    if self.image_size <= 0:
      raise ValueError(f"dataset {self.name!r}: image_size must be positive; "
                       f"got {self.image_size}")
    if self.builder is None and self.preprocessing == "none":
      raise ValueError(f"dataset {self.name!r}: a prepared tfds set needs 'resize' or "
                       "'center_crop_resize' preprocessing to reach image_size")

  @property
  def is_local(self) -> bool:
    """Whether the data is generated locally (embedded) rather than prepared beforehand."""
    return self.builder is not None

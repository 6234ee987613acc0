"""``DATASETS`` entries for common tfds image sets, read when prepared under ``data_dir``.

These are not generated here (they need downloads); ``sources.open_split`` reads them when a
prepared array_record copy exists and otherwise says how to prepare one. Any other tfds image
set is reachable as ``'tfds:<name>[/<config>]'``.
"""

from jaxtok.data.registry import DATASETS
from jaxtok.data.spec import DatasetSpec

_CATALOG = (
    DatasetSpec(name="cifar10", tfds_name="cifar10", splits=("train", "test"), image_size=32,
                num_classes=10, preprocessing="resize", keys=("image", "label"),
                description="CIFAR-10 (Krizhevsky, 2009)"),
    DatasetSpec(name="cifar100", tfds_name="cifar100", splits=("train", "test"), image_size=32,
                num_classes=100, preprocessing="resize", keys=("image", "label"),
                description="CIFAR-100 (Krizhevsky, 2009)"),
    DatasetSpec(name="mnist", tfds_name="mnist", splits=("train", "test"), image_size=32,
                num_classes=10, preprocessing="resize", keys=("image", "label"),
                description="MNIST, grey 28x28 -> RGB, resized"),
    DatasetSpec(name="imagenet2012", tfds_name="imagenet2012", splits=("train", "validation"),
                image_size=256, num_classes=1000, preprocessing="center_crop_resize",
                keys=("image", "label"), description="ImageNet ILSVRC-2012 (manual download)"),
)

for _spec in _CATALOG:
  DATASETS.register(_spec.name, _spec)

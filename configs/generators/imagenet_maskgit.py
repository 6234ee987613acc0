"""Class-conditional MaskGIT on ImageNet-256 (the full-scale config, for real hardware).

"MaskGIT: Masked Generative Image Transformer" (Chang et al., 2022): 16x16 tokens of a 1024-code
VQ tokenizer (configs/tokenizers/conv2d_vq.py:imagenet), a 24-layer bidirectional transformer of
width 768 (16 heads, MLP 3072, dropout 0.1) with the class as a prefix token and classifier-free
guidance dropout, batch 256, AdamW (lr 1e-4, b2 0.96, weight decay 0.045), label smoothing 0.1,
5000 warm-up steps, 1.5M steps (300 epochs). First the tokenizer, then the generator:

  python -m jaxtok.main --config=configs/tokenizers/conv2d_vq.py:imagenet \
      --config.data.data_dir=$TFDS --workdir=gs://.../c2d_vq
  python -m jaxtok.main --config=configs/generators/imagenet_maskgit.py \
      --config.data.data_dir=$TFDS --config.tokenizer.init_from=gs://.../c2d_vq \
      --config.tokenizer.cache_dir=/shared/fs/imagenet_tokens --workdir=gs://.../maskgit

The train and validation images are encoded once into ``tokenizer.cache_dir`` (codes.npy,
1.28M x 16 x 16 int32 = 1.3 GB, memory-mapped; on a file system every host sees) and each host
gathers its batches' tokens there. The report samples one image per class with MaskGIT and
ReCAP (8 steps, choice temperature 4.5, CFG scale 1) and measures FD-ENL0 (EfficientNet-Lite0
pooled features at 224 px; not comparable to Inception FID) against the first 10,000 validation
images; the class-accuracy classifier is skipped (``classifier.steps = 0``). Arguments:
``steps=N``, ``tokenizer=PATH`` (default configs/tokenizers/conv2d_vq.py); ``smoke`` is rejected
(nothing of this size runs on a CPU; digits_maskgit:smoke tests the same code).
"""

import ml_collections

from configs.common import generator_base_config
from jaxtok.config_args import parse_arg

STEPS = 1_500_000  # 300 epochs x 1,281,167 images / 256 per batch = 1.50M


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=STEPS, tokenizer="configs/tokenizers/conv2d_vq.py")
  a.imagenet = True
  c = generator_base_config(a, "imagenet2012", num_classes=1000)
  c.report = ml_collections.ConfigDict({
      "per_class": 1, "order_samples": 4, "classes": (), "fd": "enl0", "fd_reference": "test",
      "fd_reference_count": 10_000, "fd_image_size": 224, "max_real_images": 10_000})
  c.sample.samplers = ("maskgit", "recap")
  c.classifier = ml_collections.ConfigDict({"steps": 0})
  return c

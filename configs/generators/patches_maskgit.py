"""Class-conditional MaskGIT on `natural_patches` tokens (class = source photo), FSQ 8x8 tokens.

First train the quickstart tokenizer (natural_patches, 32 px, FSQ 1000 codes), then the
generator on its tokens:

  python -m jaxtok.main --config=configs/quickstart.py --workdir=/tmp/jaxtok/quickstart
  python -m jaxtok.main --config=configs/generators/patches_maskgit.py \
      --config.tokenizer.init_from=/tmp/jaxtok/quickstart --workdir=/tmp/jaxtok/patches_maskgit

Add ``--config.critic.enabled=True`` to train a Token-Critic jointly (Lezama et al., 2022).

Labels are the source photo: 0..7 for the 8 training photos, 8 and 9 for the two test photos, so
``num_classes = 10`` (the embedding covers every label in the token cache) while the report
samples only the training classes ``report.classes = 0..7``. The report compares MaskGIT,
Token-Critic (with the critic) and ReCAP on the same generator at the same steps (keys
``gen/<sampler>/...``): class accuracy under a colour conv classifier trained on the training
crops except every 8th by ``index`` (its accuracy on those held-out crops:
``gen/classifier_heldout_accuracy``), FD-ENL0 (Frechet distance on EfficientNet-Lite0 pooled
features at 224 px, not comparable to Inception FID) against the first 512 real training crops
of those classes (like ImageNet FID's train statistics), NFE and ms per sample; pictures in
<workdir>/report/. Arguments: ``smoke`` (a tiny generator on a small build of the data set;
tests train a tiny tokenizer first), ``steps=N``, ``tokenizer=PATH`` (default
configs/quickstart.py).
"""

import ml_collections

from configs.common import generator_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=2000, tokenizer="configs/quickstart.py")
  # Labels 0..9 (8 and 9 are the test photos; see the docstring): the embedding covers them all.
  c = generator_base_config(a, "natural_patches", num_classes=10)
  # eval/ runs on the test photos, classes 8 and 9, whose class embeddings training never updates:
  # a held-out loss of unseen photos, not of the conditional model on its training classes.
  if a.smoke:  # the small build the quickstart smoke config uses
    c.data.num_train = 2048
    c.data.num_test = 256
  c.report = ml_collections.ConfigDict({
      "per_class": 2 if a.smoke else 8, "order_samples": 2, "classes": tuple(range(8)),
      "fd": "enl0", "fd_reference": "train", "fd_reference_count": 32 if a.smoke else 512,
      "fd_image_size": 64 if a.smoke else 224})
  c.classifier = ml_collections.ConfigDict({
      "steps": 20 if a.smoke else 600, "batch_size": 64, "lr": 2e-3, "grey": False,
      "channels": (32, 64), "features": 64, "holdout_every": 8})
  return c

"""Class-conditional MaskGIT on `digits` tokens from a trained FSQ tokenizer (CFG, 8x8 tokens).

First train the tokenizer on digits (the quickstart model), then the generator on its tokens:

  python -m jaxtok.main --config=configs/quickstart.py --config.data.name=digits \
      --workdir=/tmp/jaxtok/digits_tok
  python -m jaxtok.main --config=configs/generators/digits_maskgit.py \
      --config.tokenizer.init_from=/tmp/jaxtok/digits_tok --workdir=/tmp/jaxtok/digits_maskgit

Add ``--config.critic.enabled=True`` to train a Token-Critic jointly (Lezama et al., 2022).

The digits are encoded once into <init_from>/token_cache/digits_32/ (codes.npy, memory-mapped).
The report samples every class with MaskGIT, Token-Critic (with the critic) and ReCAP from the
same generator at the same steps and writes, per sampler under ``gen/<sampler>/``, the class
accuracy of the samples under a small conv classifier trained on real digits (its test accuracy:
``gen/classifier_test_accuracy``), the Frechet distance on its 64-d features against the real
test digits (``fd_classifier``), NFE and ms per sample; pictures: <workdir>/report/samples.png
(MaskGIT, a row per class), samples_<sampler>.png, unmasking_order.png. ``smoke``: a tiny
generator (tests train a tiny tokenizer first, see tests/tasks/test_generator_task.py).
Arguments: ``smoke``, ``steps=N``, ``tokenizer=PATH`` (the tokenizer config, default
configs/quickstart.py).
"""

import ml_collections

from configs.common import generator_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=2000, tokenizer="configs/quickstart.py")
  c = generator_base_config(a, "digits", num_classes=10)
  c.report = ml_collections.ConfigDict({"per_class": 2 if a.smoke else 8, "order_samples": 2,
                                        "fd": "classifier", "fd_reference": "test"})
  c.classifier = ml_collections.ConfigDict({"steps": 20 if a.smoke else 400, "batch_size": 64,
                                            "lr": 2e-3, "grey": True})
  return c

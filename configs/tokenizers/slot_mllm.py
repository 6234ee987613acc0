"""Slot-MLLM-style slot tokenizer: slot attention over conv features, residual VQ on the slots.

  python -m jaxtok.main --config=configs/tokenizers/slot_mllm.py --workdir=/tmp/jaxtok/slots
  python -m jaxtok.main --config=configs/tokenizers/slot_mllm.py:smoke --workdir=/tmp/jaxtok/sl_s
  python -m jaxtok.main --config=configs/tokenizers/slot_mllm.py:imagenet --workdir=gs://.../slots

Slot attention, "Object-Centric Learning with Slot Attention" (Locatello et al., 2020); Slot-MLLM
(2025) quantizes the slots with residual VQ. Trained on ``shapes`` (procedural scenes of 1-4
objects, 32 px) where slots have objects to bind to; the decoder is the spatial-broadcast decoder
with per-slot alpha masks (Slot-MLLM's unCLIP diffusion decoder is out of scope here).
Arguments: ``smoke``, ``imagenet``, ``slots=N``, ``levels=N`` (RVQ depth), ``steps=N``,
``seed=S``.
"""

import ml_collections

from configs.common import tokenizer_base_config
from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, imagenet=False, steps=0, seed=0, slots=6, levels=4)
  c = tokenizer_base_config(a, data="shapes")
  c.model = ml_collections.ConfigDict()
  c.model.kind = "slots"
  c.model.image_size = c.data.image_size
  c.model.num_slots = 32 if a.imagenet else a.slots
  c.model.slot_dim = 256 if a.imagenet else (32 if a.smoke else 64)
  c.model.code_dim = 8
  c.model.base_channels = 64 if a.imagenet else 16
  c.model.channel_mults = (1, 2, 2, 2, 2) if a.imagenet else (1, 2, 2)
  c.model.quantizer = ml_collections.ConfigDict({
      "name": "rvq", "num_levels": a.levels, "num_codes": 1024 if a.imagenet else 256, "dim": 8,
      "kmeans_init": True, "dead_code_threshold": 0.1})
  return c

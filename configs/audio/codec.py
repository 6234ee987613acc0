"""Discrete audio tokens (issue #14, DATES): an RVQ speech codec vs k-means semantic tokens.

  python -m jaxtok.main --config=configs/audio/codec.py --workdir=/tmp/jaxtok/audio
  python -m jaxtok.main --config=configs/audio/codec.py:smoke --workdir=/tmp/jaxtok/audio_smoke

Data: ``espeak_speech`` (needs ``apt-get install -y espeak-ng``), 0.64 s clips at 16 kHz.
Model: a 1D conv codec, hop 320 (50 frames/s), 8-level residual VQ of 256 codes (0.4 kbps per
level), trained with quantiser dropout so every prefix of levels decodes, on the multi-scale STFT
loss plus 50 x the waveform L1. The report scores
held-out clips at 1/2/4/8 levels and probes speaker and language from codec and semantic tokens
(see jaxtok/tasks/audio.py; docs/tokenizers_audio.md has the measured table).
Arguments: ``smoke`` (seconds, for tests), ``steps=N``, ``train=N`` / ``test=N`` (clips),
``size=N`` (clip length in 20 ms frames), ``seed``.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, steps=0, train=960, test=192, size=32, seed=0)
  c = ml_collections.ConfigDict()
  c.task = "audio_tokens"
  c.seed = a.seed
  c.num_steps = a.steps or (4 if a.smoke else 600)
  c.batch_size = 8
  c.eval_batch_size = 16 if a.smoke else 48
  c.log_every = 2 if a.smoke else 50
  c.eval_every = 0
  c.report_every = c.num_steps
  c.checkpoint_every = 0 if a.smoke else 500
  c.keep_checkpoints = 1
  c.async_checkpoint = True
  c.init_from = ""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.ynnpack_dots_only = True  # XLA:CPU's own convolutions (faster conv steps, see jaxtok.main)

  c.data = ml_collections.ConfigDict()
  c.data.name = "espeak_speech"
  c.data.image_size = 16 if a.smoke else a.size  # clip length in 20 ms frames
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.num_train = 32 if a.smoke else a.train
  c.data.num_test = 16 if a.smoke else a.test

  c.model = ml_collections.ConfigDict()
  c.model.channels = (8, 16, 16, 16) if a.smoke else (16, 32, 64, 64)
  c.model.strides = (2, 4, 5, 8)  # hop 320: 50 frames/s at 16 kHz
  c.model.latent_dim = 16 if a.smoke else 32
  c.model.dilations = (1,)  # one residual unit per stage: what 2 shared CPU cores can train
  c.model.quantizer = ml_collections.ConfigDict({
      "name": "rvq", "num_levels": 4 if a.smoke else 8, "num_codes": 16 if a.smoke else 256,
      "dim": 16 if a.smoke else 32, "ema": True, "decay": 0.99, "kmeans_init": True,
      "dead_code_threshold": 0.0 if a.smoke else 0.5, "quantize_dropout": 0.5})

  # The waveform L1 (weight 50: about a third of the STFT term) ties the phase down: without it
  # held-out SI-SNR stayed at -31 dB (docs/tokenizers_audio.md, the STFT-only rows).
  c.loss = ml_collections.ConfigDict({"stft": 1.0, "waveform_l1": 50.0})
  c.report = ml_collections.ConfigDict({
      "levels": (1, 4) if a.smoke else (1, 2, 4, 8),
      "semantic_codes": 16 if a.smoke else 256, "kmeans_iters": 5 if a.smoke else 20,
      "probe_steps": 20 if a.smoke else 400, "probe_dim": 16 if a.smoke else 64,
      "pictures": 2, "max_train_clips": 0})
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 2 if a.smoke else 100, "b1": 0.8, "b2": 0.99,
      "weight_decay": 1e-4, "grad_clip": 1.0, "final_lr_fraction": 0.1})
  return c

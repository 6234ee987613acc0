r"""Learn Your Tokens (Thawani et al., 2023): word-pooled vs BPE vs byte LM, bits per byte.

  python -m jaxtok.main --config=configs/text/learn_your_tokens.py:model=word_pooled \
      --workdir=/tmp/lyt --mode=eval
  python -m jaxtok.main --config=configs/text/learn_your_tokens.py:smoke,model=bpe \
      --workdir=/tmp/lyt_smoke --mode=eval

Arguments (comma-separated): ``model=word_pooled|bpe|byte`` (one model per run; results in
``word_lm_<model>.json``), ``smoke`` (tiny models, 3 steps: seconds), ``steps=N``,
``corpus=docstrings|python``. The full sizes give the three models about equal parameter counts
(printed at the start of a run); any ``word_lm.*`` field can be set with
``--config.word_lm.<field>=...``.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, smoke=False, model="word_pooled", steps=0, corpus="docstrings")
  config = ml_collections.ConfigDict()
  config.task = "word_lm"
  config.seed = 0
  config.num_steps = 0  # nothing runs in the training loop: --mode=eval does the work
  config.batch_size = 1
  config.mesh = ml_collections.ConfigDict({"data": -1})
  config.async_checkpoint = False

  w = ml_collections.ConfigDict()
  w.model = args.model
  w.corpus = args.corpus
  w.train_bytes = 30_000 if args.smoke else 800_000
  w.eval_bytes = 3_000 if args.smoke else 20_000
  w.max_words = 16
  w.max_bytes = 12
  w.width_multiple = 32  # byte/BPE rows padded to a multiple of 32 positions
  w.bpe_vocab = 384 if args.smoke else 2048
  w.noise_rates = "0.05,0.1"
  w.steps = args.steps or (3 if args.smoke else 600)
  w.batch_size = 4 if args.smoke else 8
  w.eval_batch = 16 if args.smoke else 32
  w.num_heads = 4
  w.mlp_ratio = 4
  if args.smoke:
    w.dim, w.local_dim, w.layers, w.byte_layers, w.bpe_layers = 32, 32, 1, 1, 1
  else:
    # About equal parameters: word_pooled 1,316,816, byte 1,345,024, bpe 1,312,000 (2048 vocab).
    w.dim, w.local_dim, w.layers, w.byte_layers, w.bpe_layers = 128, 80, 4, 5, 4
  w.encoder_layers = 1
  w.decoder_layers = 1
  w.lr = 1e-3
  w.warmup_steps = 2 if args.smoke else 60
  w.log_every = 100
  config.word_lm = w
  return config

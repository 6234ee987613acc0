r"""TokenAdapt (Sharthak et al., 2025): a new tokenizer transplanted into SmolLM2-135M.

  python -m jaxtok.main --config=configs/text/token_adapt.py --workdir=/tmp/ta --mode=eval
  python -m jaxtok.main --config=configs/text/token_adapt.py:smoke --workdir=/tmp/ta_smoke \
      --mode=eval

Everything runs inside ``--mode=eval`` (tokenizer training, the transplant arms, embedding-only
tuning, scoring). Arguments (comma-separated): ``smoke`` = a random tiny LM whose old tokenizer is
a 383-entry BPE, a 512-entry new BPE, character n-gram phi, 3 tuning steps (seconds);
``tokenizer=supertokens`` transplants the supertoken tokenizer instead of BPE; ``vocab=N``;
``steps=N`` tuning steps (0 = zero-shot only). Any ``adapt.*`` field can also be set with
``--config.adapt.<field>=...``.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, smoke=False, tokenizer="bpe", vocab=0, steps=-1)
  config = ml_collections.ConfigDict()
  config.task = "token_adapt"
  config.seed = 0
  config.num_steps = 0  # nothing runs in the training loop: --mode=eval does the work
  config.batch_size = 1
  config.mesh = ml_collections.ConfigDict({"data": -1})
  config.async_checkpoint = False

  a = ml_collections.ConfigDict()
  a.base = "tiny" if args.smoke else "smollm2-135m"
  a.old_vocab_size = 383  # base='tiny' only: its old tokenizer (+ end of text = 384 rows)
  a.tokenizer = args.tokenizer
  a.vocab_size = args.vocab or (512 if args.smoke else 16384)
  a.train_bytes = 200_000 if args.smoke else 4_000_000
  a.eval_bytes = 8_192 if args.smoke else 49_152
  a.segment_bytes = 1024
  a.arms = "random,mean,retok,local,hybrid,hybrid_theta"
  # The paper's runs: local w_g = 0, hybrid w_g = 0.3, both tau = 0.6; "+Thr" theta = 0.45; k = 3
  # is the code's default.
  a.tau = 0.6
  a.k = 3
  a.w_g = 0.3
  a.theta = 0.45
  a.embedder = "char_ngrams" if args.smoke else "minilm"
  a.tune_steps = args.steps if args.steps >= 0 else (3 if args.smoke else 200)
  a.tune_batch = 4
  a.tune_seq_len = 32 if args.smoke else 128
  a.tune_lr = 3e-4  # 3e-4 and 1e-3 gave the same last-10-step training loss (3.08) over 40 steps
  a.tune_base = True
  a.eval_batch = 8
  a.compare_supertokens = True
  config.adapt = a
  return config

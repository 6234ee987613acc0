r"""An RL-learned green-list design against KGW on a bigram byte LM (jaxtok.tasks.watermark_rl).

  python -m jaxtok.main --config=configs/rl/watermark_rl.py --workdir=/tmp/wm_rl --mode=eval
  python -m jaxtok.main --config=configs/rl/watermark_rl.py:smoke --workdir=/tmp/wm_rl_s \
      --mode=eval
  python -m jaxtok.main --config=configs/rl/watermark_rl.py:quality=0.5 --workdir=/tmp/wm_q5 \
      --mode=eval

"A Reinforcement Learning Framework for Robust and Secure LLM Watermarking": a policy over
green-list designs (seeding width, gamma, delta) per context, trained with per-token rewards for
detectability, substitution robustness, NLL cost and spoofing (jaxtok/rl/learned_watermark.py),
scored against KGW at several deltas; everything runs in ``--mode=eval`` (results in
``<workdir>/watermark_rl.json``; scripts/studies/watermark_rl.py prints the same run as tables).
Arguments: ``smoke`` (3 steps, 16 short texts: seconds; the numbers mean nothing), ``full`` (a
longer run: 6000 steps of 128 rollouts of 64 bytes; not run here), ``steps``, ``quality``,
``spoof``, ``seed``. Any ``watermark_rl.*`` field can be set with ``--config.watermark_rl.<f>=``.
"""

import ml_collections

from jaxtok.config_args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, smoke=False, full=False, steps=0, quality=0.2, spoof=0.5, seed=0)
  c = ml_collections.ConfigDict()
  c.task = "watermark_rl"
  c.seed = a.seed
  c.num_steps = 0  # nothing runs in the training loop: --mode=eval trains and scores
  c.batch_size = 1
  c.mesh = ml_collections.ConfigDict({"data": -1})
  c.async_checkpoint = False
  w = ml_collections.ConfigDict({"quality": a.quality, "spoof": a.spoof})
  if a.smoke:
    w.update(steps=3, batch=8, length=16, num=16, null_keys=2, observed=4, kgw_deltas="2",
             entropy_rules="2",
             train_prompts=10_000)
  elif a.full:
    w.update(steps=6000, batch=128, length=64, num=2048, null_keys=64, observed=128)
  if a.steps:
    w.steps = a.steps
  c.watermark_rl = w
  return c

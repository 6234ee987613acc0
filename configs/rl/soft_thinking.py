r"""Soft Thinking against discrete chain-of-thought decoding, on a byte LM trained to think.

  python -m jaxtok.main --config=configs/rl/soft_thinking.py --workdir=/tmp/soft_thinking
  python -m jaxtok.main --config=configs/rl/soft_thinking.py --workdir=/tmp/soft_thinking \
      --mode=eval                                   # the held-out report of the last checkpoint
  python -m jaxtok.main --config=configs/rl/soft_thinking.py:smoke --workdir=/tmp/soft_smoke

The model (``small``: a 4-layer byte-level LM) is trained with hard tokens only (``rl.algorithm
= sft``: next-token cross-entropy on the trace) on ``running_sums``: ``Q: 12+7+30+5\nA: `` ->
``19;49;54|54``, the partial sums are the thought and ``|`` ends it. The held-out report then
decodes every held-out prompt with each arm of ``soft_thinking.arms`` (``jaxtok/tasks/rl_soft.py``):
discrete greedy thinking, and Soft Thinking (concept tokens from the top-k / top-p of each
step's distribution), with and without Cold Stop; ``soft/<arm>/{pass@1, think_tokens,
cold_stopped}``. Paper (32B-70B reasoning models): +2.48 pass@1 and -22.4% tokens.
Arguments: ``model`` (small, tiny), ``digits`` (terms of 1 to that many digits), ``steps``,
``seed``, ``smoke`` (tiny model, a few steps, two arms).
"""

import ml_collections

from jaxtok.config_args import parse_arg

MODELS = {"small": dict(variant="small", steps=3000), "tiny": dict(variant="tiny", steps=300)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, model="small", digits=2, steps=0, seed=0, smoke=False)
  if args.model not in MODELS:
    raise ValueError(f"config argument model={args.model!r}; valid: {sorted(MODELS)}")
  m = MODELS["tiny" if args.smoke else args.model]
  c = ml_collections.ConfigDict()
  c.task = "rl"
  c.seed = args.seed
  c.model = ml_collections.ConfigDict({"variant": m["variant"], "pretrained": None,
                                       "chat": False})
  c.data = ml_collections.ConfigDict({"name": "running_sums", "image_size": args.digits})
  c.rl = ml_collections.ConfigDict({
      "algorithm": "sft",
      # 5 terms of 2 digits: 4 partial sums of <= 3 digits, 3 ';', '|', the answer, the stop
      "max_new_tokens": 8 + 8 * args.digits, "max_prompt_len": 8 + 5 * (args.digits + 1),
      "kl_beta": 0.0,
  })
  c.optimizer = ml_collections.ConfigDict({
      "lr": 1e-3, "warmup_steps": 100, "grad_clip": 1.0, "weight_decay": 0.0,
      "final_lr_fraction": 0.1})
  c.num_steps = args.steps or m["steps"]
  c.batch_size = 64
  c.heldout = ml_collections.ConfigDict({"num": 500, "samples": 2})
  c.soft_thinking = ml_collections.ConfigDict({
      "think_end": "|", "max_think_tokens": 6 + 5 * args.digits, "max_answer_tokens": 6,
      "arms": ml_collections.ConfigDict({
          "hard": "hard",  # discrete chain of thought, greedy: the baseline
          "soft_k5": "soft:top_k=5",
          "soft_p095": "soft:top_p=0.95",
          "soft_full": "soft",
          "soft_k5_cold": "soft:top_k=5,cold_stop_entropy=0.01,cold_stop_patience=2"}),
  })
  c.init_from = ""
  c.log_every = 250
  c.report_every = c.num_steps  # the held-out report once, at the end
  c.checkpoint_every = c.num_steps
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  if args.smoke:
    c.num_steps = args.steps or 4
    c.batch_size = 8
    c.heldout.num = 16
    c.soft_thinking.arms = ml_collections.ConfigDict({"hard": "hard", "soft_k1": "soft:top_k=1"})
    c.log_every = 2
    c.report_every = c.checkpoint_every = c.num_steps
  return c

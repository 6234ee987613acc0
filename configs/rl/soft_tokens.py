r"""Soft Tokens, Hard Truths: RL with hard / soft / fuzzy thinking tokens, hard tokens at test.

  python -m jaxtok.main --config=configs/rl/soft_thinking.py:steps=600,digits=1 \
      --workdir=/tmp/st_sft                                      # the SFT warm-up (hard tokens)
  python -m jaxtok.main --config=configs/rl/soft_tokens.py:mode=soft,init_from=/tmp/st_sft \
      --workdir=/tmp/st_soft
  python -m jaxtok.main --config=configs/rl/soft_tokens.py:smoke --workdir=/tmp/st_smoke

``rl.algorithm = soft_tokens`` (``jaxtok/tasks/rl_soft_tokens.py``) on ``running_sums``: while
thinking, ``mode=soft`` feeds softmax(logits / 0.5) @ E + noise, ``fuzzy`` the same at
temperature 1e-4, ``hard`` sampled tokens; the answer after ``|`` is hard tokens; RLOO over the
trajectory's log-likelihood (the fed embeddings' Gaussian log-densities and the answer's token
log-probs). The held-out report decodes with hard tokens only: greedy pass@1, sampled pass@k,
and the ``soft/hard`` arm's thinking tokens. Arguments: ``mode``, ``digits`` (as the warm-up's),
``steps``, ``lr``, ``noise_std`` and ``noise_scale`` (sigma = 0.33 x the embedding table's RMS, as
in the paper; ``noise_scale=absolute`` reads noise_std as sigma), ``init_from`` (the warm-up's
workdir), ``seed``, ``smoke``.
"""

import ml_collections

from jaxtok.config_args import parse_arg

MODES = {"hard": 1.0, "soft": 0.5, "fuzzy": 1e-4}  # think temperatures (the paper's)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, mode="soft", digits=1, steps=0, noise_std=0.33, noise_scale="rms",
                   init_from="", seed=0, lr=3e-4, smoke=False)
  if args.mode not in MODES:
    raise ValueError(f"config argument mode={args.mode!r}; valid: {sorted(MODES)}")
  c = ml_collections.ConfigDict()
  c.task = "rl"
  c.seed = args.seed
  c.model = ml_collections.ConfigDict({"variant": "tiny" if args.smoke else "small",
                                       "pretrained": None, "chat": False})
  c.data = ml_collections.ConfigDict({"name": "running_sums", "image_size": args.digits})
  c.rl = ml_collections.ConfigDict({
      "algorithm": "soft_tokens", "think_mode": args.mode,
      "think_temperature": MODES[args.mode], "noise_std": args.noise_std,
      "noise_scale": args.noise_scale, "think_end": "|",
      # the same budgets as the warm-up (configs/rl/soft_thinking.py): thought, '|', answer
      "max_new_tokens": 8 + 8 * args.digits, "max_think_tokens": 6 + 5 * args.digits,
      "max_prompt_len": 8 + 5 * (args.digits + 1), "group_size": 4, "temperature": 1.0,
      "kl_beta": 0.0,
  })
  c.optimizer = ml_collections.ConfigDict({
      "lr": args.lr, "warmup_steps": 10, "grad_clip": 1.0, "weight_decay": 0.0,
      "final_lr_fraction": 1.0})
  c.num_steps = args.steps or 100
  c.batch_size = 16  # prompts; x group_size rollouts
  c.heldout = ml_collections.ConfigDict({"num": 200, "samples": 4})
  c.soft_thinking = ml_collections.ConfigDict({  # hard thinking's token count in the report
      "think_end": "|", "max_think_tokens": 6 + 5 * args.digits, "max_answer_tokens": 6,
      "arms": ml_collections.ConfigDict({"hard": "hard"})})
  c.init_from = args.init_from
  c.log_every = 2
  c.report_every = c.num_steps
  c.checkpoint_every = c.num_steps
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  if args.smoke:
    c.num_steps = args.steps or 2
    c.batch_size = 4
    c.rl.group_size = 2
    c.heldout.num = 8
    c.heldout.samples = 2
    c.log_every = 1
    c.report_every = c.checkpoint_every = c.num_steps
  return c

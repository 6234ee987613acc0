r"""DECS on chain-of-thought sums that overthink: warm-up on the traces, then GRPO or DECS.

  # a small byte-level LM: supervised warm-up on the overthinking traces, then RL from it
  python -m jaxtok.main --config=configs/rl/arithmetic_cot.py:algorithm=sft --workdir=/tmp/cot_sft
  python -m jaxtok.main --config=configs/rl/arithmetic_cot.py:algorithm=decs \
      --config.init_from=/tmp/cot_sft --workdir=/tmp/cot_decs
  python -m jaxtok.main --config=configs/rl/arithmetic_cot.py:smoke --workdir=/tmp/cot_smoke

Arguments: ``algorithm`` (sft, grpo, decs; grpo with ``length_penalty`` > 0 is the plain
length-penalty baseline), ``model`` (small, tiny), ``digits`` (terms of up to that many digits),
``steps``, ``seed``, ``lr`` (0: the model's default), ``easy_start`` / ``easy_end`` (DECS's
curriculum: the share of easy prompts that train ramps from one to the other; both 0.5, the data
set's share, turn the curriculum off), ``smoke`` (tiny model, a few steps).
The held-out report adds ``heldout/tokens`` (mean completion tokens, greedy) and
``heldout/after_answer`` (their share after the first chunk that holds the answer).
"""

import ml_collections

from jaxtok.config_args import parse_arg

MODELS = {
    "small": dict(variant="small", lr=1e-3, rl_lr=5e-5, sft_steps=800, rl_steps=60),
    "tiny": dict(variant="tiny", lr=1e-3, rl_lr=1e-4, sft_steps=300, rl_steps=60),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, algorithm="decs", model="small", digits=1, steps=0, seed=0, lr=0.0,
                   length_penalty=0.0, easy_start=0.0, easy_end=0.5, smoke=False)
  if args.model not in MODELS:
    raise ValueError(f"config argument model={args.model!r}; valid: {sorted(MODELS)}")
  m = MODELS["tiny" if args.smoke else args.model]
  if args.digits not in (1, 2):
    raise ValueError(f"config argument digits must be 1 or 2 (traces fit 56 tokens), got "
                     f"{args.digits}")
  sft = args.algorithm == "sft"

  config = ml_collections.ConfigDict()
  config.task = "rl"
  config.seed = args.seed
  config.model = ml_collections.ConfigDict(
      {"variant": m["variant"], "pretrained": None, "chat": False})
  config.data = ml_collections.ConfigDict({"name": "arithmetic_cot", "image_size": args.digits})
  config.rl = ml_collections.ConfigDict({
      "algorithm": args.algorithm,
      "group_size": 8,
      # the longest trace (3 terms, 3 checks) + the stop token: 40 bytes at 1 digit, 54 at 2
      "max_new_tokens": 40 if args.digits == 1 else 56,
      "max_prompt_len": 24,
      "temperature": 1.0,
      "clip_eps": 0.2, "clip_eps_high": 0.28,
      "kl_beta": 0.0 if sft else 0.02,
      "loss_norm": "token",
      "normalise_std": True,
      "epochs": 1,
      # the paper's curriculum knob; our reading: easy prompts ramp from 0 to half the batch
      # over the first half of training (jaxtok.rl.decs.easy_fraction)
      "decs_kappa": 0.5, "decs_easy_start": args.easy_start, "decs_easy_end": args.easy_end,
      "length_penalty": args.length_penalty,
  })
  config.optimizer = ml_collections.ConfigDict({
      "lr": args.lr or (m["lr"] if sft else m["rl_lr"]), "warmup_steps": 20, "grad_clip": 1.0,
      "final_lr_fraction": 0.1 if sft else 1.0})
  config.num_steps = args.steps or (m["sft_steps"] if sft else m["rl_steps"])
  config.batch_size = 64 if sft else 16
  config.heldout = ml_collections.ConfigDict({"num": 300, "samples": 2})
  config.init_from = ""
  config.log_every = 25
  config.report_every = config.num_steps  # the held-out report once, at the end
  config.checkpoint_every = 0
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  if args.smoke:
    config.num_steps = args.steps or 4
    config.batch_size = 8 if sft else 4
    config.rl.group_size = 4
    config.heldout.num, config.heldout.samples = 16, 2
    config.log_every = 2
    config.report_every = 4
  return config

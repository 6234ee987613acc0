r"""Verifiable-reward RL on arithmetic: supervised warm-up, then GRPO (or REINFORCE).

  # a small LM from scratch: warm-up on the reference answers, then GRPO from that run
  python -m jaxtok.main --config=configs/rl/arithmetic.py:algorithm=sft --workdir=/tmp/ar_sft
  python -m jaxtok.main --config=configs/rl/arithmetic.py:algorithm=grpo \
      --config.init_from=/tmp/ar_sft --workdir=/tmp/ar_grpo
  # SmolLM2-135M-Instruct, the same two stages
  python -m jaxtok.main --config=configs/rl/arithmetic.py:model=smollm2,algorithm=sft ...
  python -m jaxtok.main --config=configs/rl/arithmetic.py:smoke --workdir=/tmp/ar_smoke

  # online DPO on correct-vs-incorrect rollout pairs, then TGDPO guided by that DPO policy
  python -m jaxtok.main --config=configs/rl/arithmetic.py:algorithm=dpo \
      --config.init_from=/tmp/ar_sft --workdir=/tmp/ar_dpo
  python -m jaxtok.main --config=configs/rl/arithmetic.py:algorithm=tgdpo \
      --config.init_from=/tmp/ar_sft --config.rl.reward_model=/tmp/ar_dpo --workdir=/tmp/ar_tgdpo

Arguments: ``algorithm`` (grpo, reinforce, sft, dpo, tgdpo), ``model`` (small: a 4-layer
byte-level LM trained here; tiny: the 2-layer test model; smollm2: SmolLM2-135M-Instruct),
``digits`` (operands of up to that many digits), ``prompts`` (SmolLM2 only: ``words``, a quarter
word problems in the chat template, or ``bare``, plain ``a op b`` text without it, ~3x shorter),
``steps``, ``seed``, ``rl_batch`` (prompts per RL step) and ``group`` (rollouts per prompt), 0 =
the model's default, both ignored by ``algorithm=sft``; ``smoke`` (tiny model, a few steps,
seconds). The held-out report
(``heldout/pass@1``, greedy) runs every ``report_every`` steps.
"""

import ml_collections

from jaxtok.config_args import parse_arg

MODELS = {
    # rl_lr: policy-gradient steps are noisier than supervised ones; Adam turns even a weak
    # signal into lr-sized moves, and at the warm-up's peak rate GRPO collapsed (reward .51 ->
    # .08, KL 2.6 nats/token in 100 steps).
    "small": dict(variant="small", pretrained=None, lr=1e-3, rl_lr=5e-5, sft_steps=1500,
                  rl_steps=200),
    "tiny": dict(variant="tiny", pretrained=None, lr=1e-3, rl_lr=1e-4, sft_steps=300,
                 rl_steps=100),
    # smollm2: sized for under an hour on 2 shared CPU cores (docs/rl_grpo_smollm2.md): a
    # 32-problem SFT step takes 4-7 s, an 8 x 8 GRPO step 9-20 s; with a few dozen steps the
    # rates are higher and the learning-rate warm-up shorter than a long run would use.
    "smollm2": dict(variant="smollm2-135m", pretrained="smollm2-135m", lr=3e-5, rl_lr=5e-6,
                    sft_steps=50, rl_steps=24, rl_batch=8, sft_batch=32, warmup=2),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, algorithm="grpo", model="small", digits=2, steps=0, seed=0, smoke=False,
                   prompts="words", rl_batch=0, group=0)
  if args.model not in MODELS:
    raise ValueError(f"config argument model={args.model!r}; valid: {sorted(MODELS)}")
  if args.prompts not in ("words", "bare"):
    raise ValueError(f"config argument prompts={args.prompts!r}; valid: ['bare', 'words']")
  m = MODELS["tiny" if args.smoke else args.model]
  sft = args.algorithm == "sft"
  byte_level = m["pretrained"] is None
  bare = byte_level or args.prompts == "bare"

  config = ml_collections.ConfigDict()
  config.task = "rl"
  config.seed = args.seed
  config.model = ml_collections.ConfigDict(
      {"variant": m["variant"], "pretrained": m["pretrained"], "chat": False})
  if not byte_level:
    config.model.plain_prompts = bare
  # Byte-level models get bare "a op b" prompts (short); SmolLM2 by default a quarter as word
  # problems in its chat template.
  config.data = ml_collections.ConfigDict({
      "name": "arithmetic" if bare else "arithmetic_words", "image_size": args.digits})
  config.rl = ml_collections.ConfigDict({
      "algorithm": args.algorithm,
      "group_size": 8,
      "max_new_tokens": 8 if byte_level else 6,  # answers of <= 7 digits + the stop token
      # "Q: 99*99\nA: " is 13 bytes (12 SmolLM2 tokens, digits one each); the longest word
      # problem in the chat template is 57 SmolLM2 tokens
      "max_prompt_len": 16 if bare else 64,
      "temperature": 1.0,
      "clip_eps": 0.2, "clip_eps_high": 0.28,  # DAPO's clip-higher
      "kl_beta": 0.0 if sft else 0.02,
      "loss_norm": "token",
      "normalise_std": True,
      "epochs": 1,
  })
  if args.algorithm in ("dpo", "tgdpo"):
    # TGDPO's beta and alpha; beta is also DPO's KL strength, so no separate KL term.
    config.rl.update({"dpo_beta": 0.1, "tgdpo_alpha": 0.5, "reward_model": "", "kl_beta": 0.0})
  config.optimizer = ml_collections.ConfigDict({
      "lr": m["lr"] if sft else m["rl_lr"], "warmup_steps": m.get("warmup", 20), "grad_clip": 1.0,
      "final_lr_fraction": 0.1 if sft else 1.0})
  config.num_steps = args.steps or (m["sft_steps"] if sft else m["rl_steps"])
  # prompts; GRPO samples group_size completions each
  config.batch_size = m.get("sft_batch", 64) if sft else m.get("rl_batch", 16)
  # 1000 held-out problems: the standard error of a pass@1 near .6 is about .015.
  config.heldout = ml_collections.ConfigDict({"num": 1000, "samples": 4})
  config.init_from = ""
  config.log_every = 25
  config.report_every = 100
  config.checkpoint_every = 0
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  if args.smoke:
    config.num_steps = args.steps or 4
    config.batch_size = 8 if sft else 4
    config.rl.group_size = 4
    config.heldout.num, config.heldout.samples = 16, 2
    config.log_every = 2
    config.report_every = 4
  if not sft:  # after smoke: a less noisy policy gradient is more prompts or more rollouts
    config.batch_size = args.rl_batch or config.batch_size
    config.rl.group_size = args.group or config.rl.group_size
  return config

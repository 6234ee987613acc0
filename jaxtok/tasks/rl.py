"""The ``rl`` task: a causal LM policy trained on verifiable rewards (GRPO, REINFORCE, online
DPO and TGDPO on correct-vs-incorrect rollout pairs), or supervised on the reference answers
first (``sft``, the warm-up that lets a policy answer at all).

Every step: a batch of prompts from the data set (``arithmetic``), ``group_size`` sampled
completions each with the KV-cache sampler (``experience``, jitted), rewards checked on the host,
group-relative advantages, reference-policy log-probs once per rollout, then ``epochs`` policy
updates on the clipped surrogate (``train_step``). ``sft`` uses the same update with the
reference answer as the only completion and advantage 1, which is exactly next-token
cross-entropy on the answer. ``dpo`` / ``tgdpo`` turn each prompt's group into one preference
pair, a correct over an incorrect rollout (``tasks/rl_pairs.py``), scored by the reference policy
and, for ``tgdpo``, by the reward model ``rl.reward_model`` (a finished ``dpo`` run).
``report`` scores greedy held-out pass@1.

The reference policy is the one training starts from: the ``init_from`` run's weights, else
the pretrained or seed-initialised model, loaded once on first use.

Config (see ``configs/rl/arithmetic.py``): ``model.{variant, pretrained, chat, plain_prompts}``,
``data.{name, image_size (= digits)}``, ``rl.*`` (``RL_DEFAULTS``), ``heldout.num``,
``optimizer.*``, ``init_from``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.config_args import with_defaults
from jaxtok.data import arithmetic_cot
from jaxtok.data.batches import batch_sharding, to_host
from jaxtok.generators.causal_lm import CausalLM, init_cache, lm_config
from jaxtok.generators.samplers.autoregressive import ModelStep
from jaxtok.pretrained.chat import chatml
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.rl import decs
from jaxtok.rl.grpo import LOSS_NORMS, group_advantages, policy_loss
from jaxtok.rl.rollout import group_logprobs, sample_group, sequence_logprobs
from jaxtok.tasks import rl_pairs, rl_soft, rl_soft_tokens
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import boxed_init, build_optimizer
from jaxtok.tasks.rl_envs import env_of
from jaxtok.tasks.rl_pairs import PREFERENCE
from jaxtok.train import loop
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

ALGORITHMS = ("grpo", "reinforce", "sft", "decs", "soft_tokens", *PREFERENCE)
RL_DEFAULTS = {
    "algorithm": "grpo", "group_size": 8, "max_new_tokens": 8, "max_prompt_len": 32,
    "temperature": 1.0, "top_k": 0, "top_p": 1.0, "clip_eps": 0.2, "clip_eps_high": 0.2,
    "kl_beta": 0.04, "loss_norm": "token", "normalise_std": True, "epochs": 1,
    # dpo / tgdpo (TGDPO's paper: beta .1, alpha .5); reward_model: a finished dpo run's workdir
    "dpo_beta": 0.1, "tgdpo_alpha": 0.5, "reward_model": "",
    # decs: curriculum (jaxtok.rl.decs.easy_fraction); length_penalty: grpo's baseline for
    # length, reward of a correct rollout minus length_penalty * tokens / max_new_tokens
    "decs_kappa": 0.5, "decs_easy_start": 0.0, "decs_easy_end": 0.5, "length_penalty": 0.0,
    **rl_soft_tokens.DEFAULTS,  # soft_tokens: think_mode hard / soft / fuzzy, noise_std, ...
}
OPT_DEFAULTS = {"lr": 1e-4, "warmup_steps": 10, "grad_clip": 1.0, "b1": 0.9, "b2": 0.99,
                "weight_decay": 0.0, "final_lr_fraction": 1.0}


def _check(rl, config) -> None:
  if rl.algorithm not in ALGORITHMS:
    raise ValueError(f"rl.algorithm={rl.algorithm!r}; valid: {ALGORITHMS}")
  if rl.loss_norm not in LOSS_NORMS:
    raise ValueError(f"rl.loss_norm={rl.loss_norm!r}; valid: {LOSS_NORMS}")
  for key in ("group_size", "max_new_tokens", "max_prompt_len", "epochs"):
    if int(rl[key]) < 1:
      raise ValueError(f"rl.{key} must be >= 1, got {rl[key]}")
  if rl.algorithm != "sft" and rl.group_size < 2:
    raise ValueError(f"rl.group_size must be >= 2 for {rl.algorithm} (group-relative "
                     f"advantages), got {rl.group_size}")
  if rl.temperature <= 0:
    raise ValueError(f"rl.temperature must be > 0 (rollouts sample), got {rl.temperature}")
  if rl.algorithm in PREFERENCE and rl.dpo_beta <= 0:
    raise ValueError(f"rl.dpo_beta must be > 0, got {rl.dpo_beta}")
  if rl.algorithm == "tgdpo":
    rl_pairs.require_run(rl.reward_model, "rl.reward_model")
  if rl.algorithm == "decs" and config.data.name != "arithmetic_cot":
    raise ValueError(f"rl.algorithm=decs needs chunked traces (data.name=arithmetic_cot), got "
                     f"data.name={config.data.name!r}")


class Policy:
  """The model, its tokenizer and prompt format, and the jitted pieces around them."""

  def __init__(self, config):
    model_cfg = config.model
    pretrained = model_cfg.get("pretrained")
    self.lm = load_pretrained_lm(pretrained) if pretrained else None
    if self.lm is not None:
      arch, self.tokenizer = self.lm.config, self.lm.tokenizer
      # plain_prompts: skip an instruct model's chat template. SmolLM2's default system prompt
      # makes a bare "Q: 12+34\nA: " 42 tokens instead of ~12, and every step pays for it.
      self.chat = self.lm.chat and not model_cfg.get("plain_prompts", False)
      self.stops = tuple(self.lm.stop_tokens)
    else:
      arch, self.tokenizer = lm_config(model_cfg.get("variant", "tiny")), ByteTokenizer()
      self.chat, self.stops = bool(model_cfg.get("chat", False)), (self.tokenizer.eos_id,)
    self.model = CausalLM.from_config(arch, dtype=config.get("dtype", "float32"))
    self.step_fn = ModelStep(self.model)
    self.pad_id = int(self.tokenizer.pad_id if self.tokenizer.pad_id is not None
                      else self.stops[0])
    self._caches: dict[tuple[int, int], Any] = {}
    self.env = env_of(config.data.name)

  def logits(self, params, tokens, positions, kv_mask):
    return self.model.apply({"params": params}, tokens, positions=positions, kv_mask=kv_mask)

  def cache(self, rows: int, length: int):
    """An empty KV cache (built once per shape: init_cache traces the model)."""
    if (rows, length) not in self._caches:
      self._caches[rows, length] = init_cache(self.model, rows, length)
    return self._caches[rows, length]

  def prompt_ids(self, problem) -> list[int]:
    text = self.env.prompt_text(problem)
    return self.tokenizer.encode(chatml(text) if self.chat else text)

  def completion_text(self, ids) -> str:
    ids = [int(i) for i in ids]
    ids = ids[:ids.index(self.stops[0])] if self.stops[0] in ids else ids
    return self.tokenizer.decode(ids, skip_special_tokens=True)


def _left_pad(rows: list[list[int]], length: int, pad: int, what: str):
  """[B, length] ids and mask, right-aligned; a row longer than ``length`` is an error."""
  longest = max(len(r) for r in rows)
  if longest > length:
    raise ValueError(f"a {what} has {longest} tokens, more than {length}: raise "
                     f"rl.max_prompt_len (or rl.max_new_tokens for answers)")
  ids = np.full((len(rows), length), pad, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, r in enumerate(rows):
    if r:
      ids[i, length - len(r):], mask[i, length - len(r):] = r, True
  return ids, mask


def build(config) -> Task:
  rl = with_defaults(config, "rl", RL_DEFAULTS)
  _check(rl, config)
  opt = with_defaults(config, "optimizer", OPT_DEFAULTS)
  policy = Policy(config)
  env = policy.env
  g = 1 if rl.algorithm == "sft" else int(rl.group_size)
  p_len, m_len = int(rl.max_prompt_len), int(rl.max_new_tokens)
  tx = build_optimizer(opt, int(config.num_steps))
  digits = int(config.data.get("image_size", 2))
  host_params = policy.lm.params if policy.lm is not None else None
  soft_tokens = rl.algorithm == "soft_tokens"  # Soft Tokens, Hard Truths (rl_soft_tokens.py)
  st_end = rl_soft_tokens.check(rl, policy.tokenizer) if soft_tokens else None

  def init(rng, example_batch=None) -> TrainState:
    del example_batch
    params = boxed_init(policy.model, rng, jnp.zeros((1, 8), jnp.int32), host_params)
    return TrainState.create(params=params, tx=tx, rng=rng)

  def prepare_batch(rows):
    probs = [env.problem_of({k: v[i] for k, v in rows.items()}) for i in range(len(rows["mask"]))]
    prompt, prompt_mask = _left_pad([policy.prompt_ids(p) for p in probs], p_len,
                                    policy.pad_id, "prompt")
    answers = [policy.tokenizer.encode(env.answer_text(p)) + [policy.stops[0]]
               for p in probs]
    answer = np.full((len(probs), m_len), policy.pad_id, np.int32)
    for i, a in enumerate(answers):
      if len(a) > m_len:
        raise ValueError(f"an answer has {len(a)} tokens, more than rl.max_new_tokens={m_len}")
      answer[i, :len(a)] = a
    return {"prompt": prompt, "prompt_mask": prompt_mask, "answer": answer,
            "answer_len": np.asarray([len(a) for a in answers], np.int32),
            **{k: rows[k] for k in env.fields}, "mask": rows["mask"]}

  reference: dict[str, Any] = {}

  def reference_params():
    if "params" not in reference:
      if config.get("init_from"):
        state, _ = loop.restore_state(config, config.init_from, build(config))
      else:
        state = jax.jit(init)(jax.random.PRNGKey(config.seed))
      reference["params"] = nn.unbox(state.params)
    return reference["params"]

  def reward_model_params():
    """TGDPO's pi_rm: the latest checkpoint of the dpo run ``rl.reward_model``."""
    if "reward_model" not in reference:
      state, _ = loop.restore_state(config, rl.reward_model, build(config))
      reference["reward_model"] = nn.unbox(state.params)
    return reference["reward_model"]

  ref_logprobs = jax.jit(lambda params, tokens, mask: sequence_logprobs(
      policy.logits, params, tokens, mask))

  def experience(state: TrainState, batch):
    sharding = batch_sharding(batch["prompt"].sharding.mesh)
    n = batch["prompt"].shape[0]
    rows = np.repeat(np.arange(n), g)

    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    if soft_tokens:
      return rl_soft_tokens.experience(policy, rl, st_end, state.params, jax.random.fold_in(
          state.step_rng(), 1), batch, g, put)
    if rl.algorithm == "sft":
      answer = to_host(batch["answer"])
      tokens = np.concatenate([to_host(batch["prompt"]), answer], axis=1)
      new = np.arange(m_len)[None] < to_host(batch["answer_len"])[:, None]
      prompt_mask = to_host(batch["prompt_mask"])
      token_mask = np.concatenate([prompt_mask, new], axis=1)
      completion = np.concatenate([np.zeros_like(prompt_mask), new], axis=1)
      rewards = np.ones((n,), np.float32)
      advantages = rewards
    else:
      roll = sample_group(
          jax.random.fold_in(state.step_rng(), 1), policy.step_fn, nn.unbox(state.params),
          policy.cache(n * g, p_len + m_len), batch["prompt"], batch["prompt_mask"],
          group_size=g, max_new_tokens=m_len, temperature=float(rl.temperature),
          top_k=int(rl.top_k), top_p=float(rl.top_p), stop_tokens=policy.stops,
          pad_id=policy.pad_id)
      tokens, token_mask = to_host(roll.tokens), to_host(roll.token_mask)
      completion = to_host(roll.completion_mask)
      host = {k: to_host(batch[k]) for k in env.fields}
      probs = [env.problem_of({k: v[r] for k, v in host.items()}) for r in rows]
      texts = [policy.completion_text(tokens[i, p_len:]) for i in range(n * g)]
      rewards = np.asarray([env.reward(t, p.answer) for t, p in zip(texts, probs)], np.float32)
      if rl.algorithm in PREFERENCE:
        return preference_experience(tokens, token_mask, completion, rewards,
                                     to_host(batch["mask"]), put)
      lengths = completion[:, p_len:].sum(axis=1)
      shaped = rewards - float(rl.length_penalty) * rewards * lengths / m_len
      advantages = np.asarray(group_advantages(jnp.asarray(shaped), g,
                                               normalise_std=rl.algorithm in ("grpo", "decs")
                                               and bool(rl.normalise_std)))
      if rl.algorithm == "decs":
        advantages = decs_advantages(state, advantages, tokens, texts, probs, lengths,
                                     rewards, rows)
    data_mask = to_host(batch["mask"])[rows]
    out = {"tokens": tokens, "token_mask": token_mask, "completion_mask": completion,
           "advantages": advantages * (data_mask[:, None] if advantages.ndim == 2
                                       else data_mask), "rewards": rewards}
    out = {k: put(v) for k, v in out.items()}
    if rl.kl_beta and rl.algorithm != "sft":
      out["ref_logp"] = group_logprobs(  # each prompt's prefix once per group
          policy.step_fn, reference_params(), policy.cache(n * g, p_len + m_len),
          out["tokens"], out["token_mask"], group_size=g, prompt_len=p_len)
    return out

  def decs_advantages(state, base, tokens, texts, probs, lengths, rewards, rows):
    """[N * G, P + M - 1] per-token advantages (aligned with the log-probs): GRPO's plus DECS's
    deltas, and the curriculum: easy prompts beyond the scheduled share get advantage 0."""
    delim = policy.tokenizer.encode(arithmetic_cot.DELIMITER)[0]
    deltas = np.zeros((len(texts), m_len), np.float32)
    for i, (text, p) in enumerate(zip(texts, probs)):
      chunks = decs.split_chunks(text, arithmetic_cot.DELIMITER)
      first = decs.first_correct(chunks, lambda c, a=p.answer: arithmetic_cot.value_of(c) == a)
      stop = int(lengths[i]) - int(tokens[i, p_len + int(lengths[i]) - 1] in policy.stops)
      deltas[i] = decs.token_deltas(decs.chunk_index(tokens[i, p_len:], stop, delim), first,
                                    rewards[i] > 0)
    step = int(jax.device_get(state.step))
    share = decs.easy_fraction(step, int(config.num_steps), kappa=float(rl.decs_kappa),
                               start=float(rl.decs_easy_start), end=float(rl.decs_easy_end))
    keep = np.random.default_rng([config.seed, step]).random(rows.max() + 1) < min(
        1.0, share / arithmetic_cot.EASY_FRACTION)
    used = np.asarray([not p.easy or keep[r] for p, r in zip(probs, rows)], np.float32)
    out = np.repeat(base[:, None], tokens.shape[1] - 1, axis=1)
    out[:, p_len - 1:] = decs.shaped_advantages(base, deltas)
    return out * used[:, None]

  def preference_experience(tokens, token_mask, completion, rewards, data_mask, put):
    """One (correct, incorrect) pair per prompt, with reference (and reward-model) log-probs."""
    pairs = rl_pairs.pair_rollouts(tokens, token_mask, completion, rewards, g, data_mask)
    out = {k: put(v) for k, v in {**pairs, "rewards": rewards}.items()}
    scored = (out["tokens"], out["token_mask"])
    out["ref_logp"] = rl_pairs.pair_logprobs(ref_logprobs, reference_params(), *scored)
    if rl.algorithm == "tgdpo":
      out["rm_logp"] = rl_pairs.pair_logprobs(ref_logprobs, reward_model_params(), *scored)
    return out

  def loss_fn(params, batch, old_logp):
    logp = sequence_logprobs(policy.logits, params, batch["tokens"], batch["token_mask"])
    old = jax.lax.stop_gradient(logp) if old_logp is None else old_logp
    loss, metrics = policy_loss(
        logp, old, batch["advantages"], batch["completion_mask"][:, 1:],
        ref_logp=batch.get("ref_logp"),
        clip_eps=None if rl.algorithm != "grpo" else float(rl.clip_eps),
        clip_eps_high=float(rl.clip_eps_high),
        kl_beta=float(rl.kl_beta) if "ref_logp" in batch else 0.0, loss_norm=rl.loss_norm)
    mask = batch["completion_mask"][:, 1:]
    metrics["nll"] = -(logp * mask).sum() / jnp.maximum(mask.sum(), 1)  # per completion token
    return loss, metrics

  def pair_loss_fn(params, batch):
    return rl_pairs.preference_loss(policy.logits, params, batch, algorithm=rl.algorithm,
                                    beta=float(rl.dpo_beta), alpha=float(rl.tgdpo_alpha))

  def train_step(state: TrainState, batch):
    if rl.algorithm in PREFERENCE or soft_tokens:  # no ratio: epochs are repeated steps
      for _ in range(int(rl.epochs)):
        state, metrics = supervised_step(
            state, rl_soft_tokens.loss_fn(policy, rl) if soft_tokens else pair_loss_fn, batch)
      metrics["reward"] = batch["rewards"].mean()
      return state, metrics
    old_logp = None
    if rl.epochs > 1:  # the rollout's own log-probs, before this step's first update
      old_logp = jax.lax.stop_gradient(sequence_logprobs(
          policy.logits, state.params, batch["tokens"], batch["token_mask"]))
    for _ in range(int(rl.epochs)):
      state, metrics = supervised_step(state, loss_fn, batch, old_logp)
    metrics["reward"] = batch["rewards"].mean()
    return state, metrics

  heldout = env.problems(config.data.name, "test",
                         int(config.get("heldout", {}).get("num", 128)), digits)
  greedy_prompts = _left_pad([policy.prompt_ids(p) for p in heldout], p_len, policy.pad_id,
                             "held-out prompt")

  k = int(config.get("heldout", {}).get("samples", 4))
  soft = config.get("soft_thinking")  # Soft Thinking arms in the held-out report (rl_soft.py)
  if soft:
    soft = with_defaults(config, "soft_thinking", {**rl_soft.DEFAULTS, "arms": soft.arms})
    think_end = rl_soft.check(soft, policy.tokenizer)

  def _solved(params, rng, group, greedy, stats=None):
    """[num held-out, group] rewards of greedy (group 1) or sampled completions; ``stats``
    (a dict) gets the mean completion tokens and the share of them after the answer is known."""
    prompts, masks = (jnp.asarray(x) for x in greedy_prompts)
    solved, texts = [], []
    for start in range(0, len(heldout), 256):  # bounded sampler batches
      end = min(start + 256, len(heldout))
      roll = sample_group(
          jax.random.fold_in(rng, start), policy.step_fn, params,
          policy.cache((end - start) * group, p_len + m_len), prompts[start:end],
          masks[start:end], group_size=group, max_new_tokens=m_len, greedy=greedy,
          temperature=float(rl.temperature), stop_tokens=policy.stops, pad_id=policy.pad_id)
      tokens = to_host(roll.tokens)
      texts += [policy.completion_text(tokens[i, p_len:]) for i in range((end - start) * group)]
      if stats is not None:
        stats.setdefault("tokens", []).extend(to_host(roll.completion_mask).sum(axis=1))
    solved = [env.reward(t, heldout[i // group].answer) for i, t in enumerate(texts)]
    if stats is not None and env.held_out_stats is not None:
      probs = [heldout[i // group] for i in range(len(texts))]
      stats.update(env.held_out_stats(texts, probs, stats["tokens"]))
    return np.asarray(solved).reshape(len(heldout), group)

  def report(state: TrainState, workdir: str | None = None, step: int = 0) -> dict[str, Any]:
    """Held-out pass@1 greedy, and at the rollout temperature (mean over k samples, with
    pass@k): RL often sharpens the sampled distribution more than it moves the argmax."""
    del workdir, step
    params = nn.unbox(state.params)
    sampled = _solved(params, jax.random.key(0), k, greedy=False)
    stats: dict[str, Any] = {}
    out = {"heldout/pass@1": float(_solved(params, jax.random.key(0), 1, True, stats).mean()),
           "heldout/pass@1_sampled": float(sampled.mean()),
           f"heldout/pass@{k}_sampled": float(sampled.max(axis=1).mean()),
           "heldout/tokens": float(np.mean(stats["tokens"]))}
    out.update({f"heldout/{k}": v for k, v in stats.items() if k != "tokens"})
    if soft:
      out.update(rl_soft.report(policy, params, *greedy_prompts, [p.answer for p in heldout],
                                soft, think_end))
    return out

  return Task(init=init, train_step=train_step, report=report, evaluate=report_eval(report),
              prepare_batch=prepare_batch, experience=experience)


def report_eval(report):
  """--mode=eval: the held-out report of the restored state."""
  return lambda state, workdir=None: report(state, workdir, int(jax.device_get(state.step)))


TASKS.register("rl", build)

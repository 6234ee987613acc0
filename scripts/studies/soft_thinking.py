"""Soft Thinking against discrete chain-of-thought decoding, on a byte LM trained to think.

  python scripts/studies/soft_thinking.py [--steps=1500] [--num=500] [--workdir=/tmp/jaxtok/soft]

The setting: multi-operand sums (3 to 5 operands of 1-2 digits) whose chain of thought is the
running sum, ``Q: 12+7+30+5\\nA: 19;49;54|54\\n``: the partial sums are the thought, ``|`` ends
it, then the answer and a newline. A 4-layer byte-level ``CausalLM`` (``variant=small``) is
trained on such traces with hard tokens only (next-token cross-entropy, AdamW, a fixed number of
steps; the checkpoint is kept in ``--workdir`` and reused). Held-out problems are those whose
content hash marks them held out, as in ``jaxtok.rl.arithmetic``.

Then every held-out prompt is decoded by ``jaxtok.rl.soft_thinking.soft_think_generate`` with
hard thinking (greedy: the baseline), and with Soft Thinking (concept tokens from the top-k /
top-p of each step's distribution), with and without Cold Stop. The answer is always greedy hard
tokens after ``|``. Reported: pass@1 (the answer's integer equals the sum), thinking tokens per
problem, and the fraction of problems Cold Stop ended. Soft Thinking's paper (on 32B-70B
reasoning models): +2.48 pass@1 and -22.4% tokens against discrete CoT.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok.generators.causal_lm import CausalLM, init_cache  # noqa: E402
from jaxtok.pretrained.text_tokenizer import ByteTokenizer  # noqa: E402
from jaxtok.rl.soft_thinking import ModelEmbedStep, soft_think_generate  # noqa: E402
from jaxtok.tasks.lm import next_token_loss  # noqa: E402

THINK_END = "|"


def held_out(operands: tuple[int, ...]) -> bool:
  h = hashlib.blake2b("+".join(map(str, operands)).encode(), digest_size=4).digest()
  return int.from_bytes(h, "little") / 2**32 < 0.2


def problem(rng: np.random.Generator, split: str) -> tuple[int, ...]:
  while True:
    ops = tuple(int(rng.integers(0, 10 ** int(rng.integers(1, 3))))
                for _ in range(int(rng.integers(3, 6))))
    if held_out(ops) == (split == "test"):
      return ops


def prompt_text(ops) -> str:
  return f"Q: {'+'.join(map(str, ops))}\nA: "


def trace_text(ops) -> str:
  partial = np.cumsum(ops)[1:]
  return ";".join(map(str, partial)) + THINK_END + str(int(partial[-1])) + "\n"


def batches(tok: ByteTokenizer, batch: int, length: int, seed: int):
  rng = np.random.default_rng(seed)
  while True:
    rows = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), bool)
    for i in range(batch):
      ops = problem(rng, "train")
      p, t = tok.encode(prompt_text(ops)), tok.encode(trace_text(ops))
      ids = (p + t)[:length]
      rows[i, :len(ids)] = ids
      mask[i, len(p) - 1:len(ids)] = True  # loss on the trace only (targets after the prompt)
    yield jnp.asarray(rows), jnp.asarray(mask)


def train(model, tok, steps: int, path: str):
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  if os.path.exists(path):  # a finished run of the same length: reuse it
    with open(path, "rb") as f:
      return serialization.from_bytes(params, f.read())
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-3, min(100, steps // 2), steps, 1e-4))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, tokens, mask):
    def loss_fn(p):
      logits = model.apply({"params": p}, tokens[:, :-1])
      return next_token_loss(logits, tokens, mask)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  start = time.time()
  for i, (tokens, mask) in zip(range(steps), batches(tok, 64, 48, seed=1)):
    params, opt, loss = step(params, opt, tokens, mask)
    if (i + 1) % 250 == 0:
      print(f"step {i + 1}/{steps} loss {float(loss):.4f} ({time.time() - start:.0f} s)",
            flush=True)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "wb") as f:
    f.write(serialization.to_bytes(params))
  os.replace(path + ".tmp", path)
  return params


def evaluate(model, tok, params, problems, **options):
  p = max(len(tok.encode(prompt_text(o))) for o in problems)
  ids = np.zeros((len(problems), p), np.int32)
  mask = np.zeros((len(problems), p), bool)
  for i, o in enumerate(problems):
    e = tok.encode(prompt_text(o))
    ids[i, p - len(e):], mask[i, p - len(e):] = e, True
  think, answer = 24, 6
  cache = init_cache(model, len(problems), p + think + 1 + answer)
  tokens, stats = soft_think_generate(
      jax.random.key(0), ModelEmbedStep(model), params, params["embed"]["embedding"], cache,
      jnp.asarray(ids), jnp.asarray(mask), think_end=tok.encode(THINK_END)[0],
      stop_tokens=tok.encode("\n"), max_think_tokens=think, max_answer_tokens=answer, **options)
  tokens = np.asarray(tokens)
  correct = []
  for i, o in enumerate(problems):
    k = int(stats["think_tokens"][i])
    text = tok.decode(tokens[i, p + k + 1:].tolist(), skip_special_tokens=True).split("\n")[0]
    correct.append(text.strip() == str(sum(o)))
  return (float(np.mean(correct)), float(np.mean(stats["think_tokens"])),
          float(np.mean(stats["cold_stopped"])))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--num", type=int, default=500)
  parser.add_argument("--workdir", default="/tmp/jaxtok/soft_thinking")
  args = parser.parse_args()
  tok = ByteTokenizer()
  model = CausalLM.from_config("small")
  params = train(model, tok, args.steps, os.path.join(args.workdir, f"lm_{args.steps}.msgpack"))
  rng = np.random.default_rng(7)
  problems = [problem(rng, "test") for _ in range(args.num)]
  arms = {
      "discrete CoT (greedy), the baseline": dict(soft=False),
      "Soft Thinking, top-k 5": dict(soft=True, top_k=5),
      "Soft Thinking, top-p 0.95": dict(soft=True, top_p=0.95),
      "Soft Thinking, full distribution": dict(soft=True),
      "Soft Thinking, top-k 5, Cold Stop (H < 0.01, 2 steps)": dict(
          soft=True, top_k=5, cold_stop_entropy=0.01, cold_stop_patience=2),
      "Soft Thinking, top-k 5, Cold Stop (H < 0.001, 4 steps)": dict(
          soft=True, top_k=5, cold_stop_entropy=0.001, cold_stop_patience=4),
  }
  print(f"{args.num} held-out problems (3-5 operands of 1-2 digits); model trained "
        f"{args.steps} steps on hard traces")
  print("| decoding | pass@1 | thinking tokens | Cold Stop ended |")
  print("|---|---|---|---|")
  for name, options in arms.items():
    acc, think, cold = evaluate(model, tok, params, problems, **options)
    print(f"| {name} | {acc:.3f} | {think:.2f} | {cold:.3f} |", flush=True)


if __name__ == "__main__":
  main()

"""The KGW watermark on SmolLM2-135M-Instruct: detection, perplexity cost, substitution robustness.

  python scripts/studies/watermark_kgw.py [--num=64] [--batch=8] [--new_tokens=150]
      [--temperature=1.0] [--gamma=0.25] [--delta=2.0] [--eps=0,0.1,0.2,0.3,0.5]
      [--null_keys=64] [--seed=0] [--show=1] [--save=texts.npz | --load=texts.npz]

"A Watermark for Large Language Models" (Kirchenbauer et al., 2023) with jaxtok.rl.watermark.
``num`` completions of the eight chat prompts of jaxtok.tasks.prompt_set (ChatML), each exactly
``new_tokens`` long (the stop tokens are banned through the same logits hook, in both arms, so
every text has the same T, like the paper's T = 200 +- 5 filter), are sampled without and with
the watermark (multinomial sampling at ``temperature``, same seeds). ``--save`` keeps the texts;
``--load`` re-analyses saved texts without sampling. Printed:

(a) detection: mean z, TPR at z = 4 and at the empirical 1% FPR threshold. The null sample is the
    unwatermarked texts scored under ``null_keys`` keys (the watermark's own and others; under the
    null the text does not depend on the key, so each key gives an exchangeable null score), so
    the 99th percentile comes from num x null_keys scores, not from 64. Both detectors: every
    scored token, and each (prev, tok) bigram once (``ignore_repeated``).
(b) text quality: perplexity of the completions under the unwatermarked model itself (the paper
    used a larger oracle, OPT-2.7B), median over texts and pooled over tokens, for both arms.
(c) robustness: a fraction eps of each watermarked completion's tokens replaced by uniformly
    random tokens; TPR at z = 4 and at the clean 1% FPR threshold, and mean z. A substitution
    changes the colour of its own token and of the next one (whose green list it seeds), so the
    green fraction falls roughly like f (1 - eps)^2 + gamma (1 - (1 - eps)^2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from jaxtok.generators.causal_lm import CausalLM, init_cache  # noqa: E402
from jaxtok.generators.samplers.autoregressive import ModelStep, generate  # noqa: E402
from jaxtok.pretrained.chat import chatml  # noqa: E402
from jaxtok.pretrained.lms import load_pretrained_lm  # noqa: E402
from jaxtok.rl.watermark import DEFAULT_KEY, KGWWatermark, detect, substitute_tokens  # noqa: E402
from jaxtok.tasks.prompt_set import CHAT_PROMPTS  # noqa: E402

SAMPLING_ARGS = ("num", "new_tokens", "temperature", "gamma", "delta", "seed")


@dataclasses.dataclass(frozen=True)
class Processor:
  """Bans ``banned`` (the stop tokens: fixed-length texts), then applies ``mark`` if any."""

  banned: tuple[int, ...]
  mark: KGWWatermark | None = None

  def __call__(self, logits, prev, step):
    logits = logits.at[:, jnp.asarray(self.banned)].set(-jnp.inf)
    return logits if self.mark is None else self.mark(logits, prev, step)


def left_pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
  width = max(len(r) for r in rows)
  tokens, mask = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    tokens[i, width - len(r):], mask[i, width - len(r):] = r, True
  return tokens, mask


def sample_texts(lm, model, params, prompts, num, batch, new_tokens, temperature, processor,
                 seed) -> tuple[np.ndarray, np.ndarray]:  # tokens [num, P + T], prompt mask
  tokens, mask = left_pad([lm.tokenizer.encode(chatml(p)) for p in prompts])
  out = []
  for j in range(num // batch):
    rows = np.arange(j * batch, (j + 1) * batch) % len(prompts)
    cache = init_cache(model, batch, tokens.shape[1] + new_tokens)
    gen, _ = generate(jax.random.key(seed * 1000 + j), ModelStep(model), params, cache,
                      jnp.asarray(tokens[rows]), jnp.asarray(mask[rows]),
                      max_new_tokens=new_tokens, temperature=temperature,
                      logits_processor=processor)
    out.append(np.asarray(gen))
  return np.concatenate(out), np.concatenate([mask[np.arange(j * batch, (j + 1) * batch) %
                                                   len(prompts)] for j in range(num // batch)])


def completion_nll(model, params, tokens, prompt_mask, batch) -> np.ndarray:  # [num, T]
  """-log p(token) of every completion token under the unwatermarked model (temperature 1)."""
  p = prompt_mask.shape[1]

  @jax.jit  # params as an argument: a closure would embed ~0.5 GB of constants in the program
  def nll(params, t, m):
    kv = jnp.concatenate([m, jnp.ones((t.shape[0], t.shape[1] - p), bool)], axis=1)
    pos = jnp.maximum(jnp.cumsum(kv, axis=1) - 1, 0)
    logits = model.apply({"params": params}, t, positions=pos, kv_mask=kv)[:, p - 1:-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, t[:, p:, None], axis=-1)[..., 0]

  return np.concatenate([np.asarray(nll(params, jnp.asarray(tokens[i:i + batch]),
                                        jnp.asarray(prompt_mask[i:i + batch])))
                         for i in range(0, len(tokens), batch)])


def scores(tokens, p, key, gamma, ignore_repeated) -> np.ndarray:
  scored = np.zeros(tokens.shape, bool)
  scored[:, p:] = True
  return np.asarray(detect(jnp.asarray(tokens), jnp.asarray(scored), key=key, gamma=gamma,
                           ignore_repeated=ignore_repeated)["z"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=64)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new_tokens", type=int, default=150)
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--gamma", type=float, default=0.25)
  parser.add_argument("--delta", type=float, default=2.0)
  parser.add_argument("--eps", default="0,0.1,0.2,0.3,0.5")
  parser.add_argument("--null_keys", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--show", type=int, default=1, help="print this many example completions")
  parser.add_argument("--save", default="", help="write the sampled tokens to this .npz")
  parser.add_argument("--load", default="", help="analyse the texts of a --save file instead "
                      "of sampling (its sampling settings replace the flags)")
  args = parser.parse_args()
  if args.num % args.batch:
    raise SystemExit(f"--num ({args.num}) must be a multiple of --batch ({args.batch})")
  start = time.perf_counter()
  lm = load_pretrained_lm("smollm2-135m")
  model = CausalLM.from_config(lm.config)
  params = jax.tree.map(jnp.asarray, lm.params)
  mark = KGWWatermark(key=DEFAULT_KEY, gamma=args.gamma, delta=args.delta)
  texts, prompt_mask = {}, None
  if args.load:  # texts sampled by an earlier run (with its settings): only the analysis reruns
    saved = np.load(args.load)
    texts = {arm: saved[arm] for arm in ("plain", "watermarked")}
    prompt_mask = saved["prompt_mask"]
    for name in SAMPLING_ARGS:
      setattr(args, name, type(getattr(args, name))(saved[name]))
    mark = KGWWatermark(key=DEFAULT_KEY, gamma=args.gamma, delta=args.delta)
  for arm, m in (("plain", None), ("watermarked", mark)):
    if arm not in texts:
      texts[arm], prompt_mask = sample_texts(
          lm, model, params, CHAT_PROMPTS, args.num, args.batch, args.new_tokens,
          args.temperature, Processor(tuple(lm.stop_tokens), m), args.seed)
  p, t = prompt_mask.shape[1], args.new_tokens
  gen_seconds = time.perf_counter() - start
  if args.save:
    np.savez(args.save, prompt_mask=prompt_mask, **texts,
             **{name: getattr(args, name) for name in SAMPLING_ARGS})
  for arm in texts:
    for row in texts[arm][:args.show]:
      print(f"--- {arm}: {lm.tokenizer.decode(row[p:], skip_special_tokens=True)!r}\n")

  print(f"SmolLM2-135M-Instruct ({lm.source.rsplit('/', 1)[-1]}), {args.num} completions of "
        f"T = {t} tokens per arm, temperature {args.temperature}, gamma {args.gamma}, delta "
        f"{args.delta}; null sample {args.num} x {args.null_keys} keys\n")
  print("| detector | arm | mean z | FPR / TPR at z=4 | 1% FPR threshold z | TPR at 1% FPR |")
  print("|---|---|---|---|---|---|")
  keys = [DEFAULT_KEY] + list(range(1, args.null_keys))
  thresholds, spreads = {}, []
  for ignore in (False, True):
    name = "each bigram once" if ignore else "every token"
    null = np.concatenate([scores(texts["plain"], p, k, args.gamma, ignore) for k in keys])
    thresholds[ignore] = float(np.quantile(null, 0.99))
    wm = scores(texts["watermarked"], p, DEFAULT_KEY, args.gamma, ignore)
    own = null[:args.num]
    per_key = null.reshape(len(keys), args.num).mean(1)
    print(f"| {name} | plain (own key) | {own.mean():.2f} | FPR {np.mean(own > 4):.3f} | | |")
    print(f"| {name} | plain (all keys) | {null.mean():.2f} (sd {null.std():.2f}) | "
          f"FPR {np.mean(null > 4):.4f} | {thresholds[ignore]:.2f} | |")
    spreads.append(f"{name}: sd over keys of the mean null z {per_key.std():.3f} (independent "
                   f"texts: {null.std() / np.sqrt(args.num):.3f})")
    print(f"| {name} | watermarked | {wm.mean():.2f} (min {wm.min():.2f}) | "
          f"TPR {np.mean(wm > 4):.3f} | | {np.mean(wm > thresholds[ignore]):.3f} |")

  print("\n" + "; ".join(spreads))
  detect_seconds = time.perf_counter() - start - gen_seconds
  # Both arms in one call: one compile of the scoring forward pass.
  both = completion_nll(model, params, np.concatenate([texts["plain"], texts["watermarked"]]),
                        np.concatenate([prompt_mask, prompt_mask]), args.batch)
  nll = {"plain": both[:args.num], "watermarked": both[args.num:]}
  print("\n| arm | median per-text PPL | pooled PPL | mean NLL (nats/token) |")
  print("|---|---|---|---|")
  for arm, x in nll.items():
    print(f"| {arm} | {np.median(np.exp(x.mean(1))):.2f} | {np.exp(x.mean()):.2f} | "
          f"{x.mean():.3f} |")

  print("\n| eps (substituted) | mean z | predicted mean z | TPR at z=4 | TPR at clean 1% FPR | "
        "mean z, each bigram once | TPR at z=4, once | TPR at 1% FPR, once |")
  print("|---|---|---|---|---|---|---|---|")
  green = float(np.mean(scores(texts["watermarked"], p, DEFAULT_KEY, args.gamma, False)))
  green = args.gamma + green * np.sqrt(args.gamma * (1 - args.gamma) / t)  # clean green fraction
  gen_mask = np.zeros(texts["watermarked"].shape, bool)
  gen_mask[:, p:] = True
  for eps in (float(e) for e in args.eps.split(",")):
    attacked, _ = substitute_tokens(jax.random.key(args.seed + 7), texts["watermarked"],
                                    gen_mask, eps, lm.config.vocab_size)
    attacked = np.asarray(attacked)
    kept = (1 - eps) ** 2  # tokens whose own token and seeding token both survived
    predicted = (green * kept + args.gamma * (1 - kept) - args.gamma) * np.sqrt(
        t / (args.gamma * (1 - args.gamma)))
    cells = []
    for ignore in (False, True):
      z = scores(attacked, p, DEFAULT_KEY, args.gamma, ignore)
      tpr = np.mean(z > thresholds[ignore])
      cells += [f"{z.mean():.2f}"] + ([f"{predicted:.2f}"] if not ignore else []) + [
          f"{np.mean(z > 4):.3f}", f"{tpr:.3f}"]
    print(f"| {eps:.2f} | " + " | ".join(cells) + " |")
  print(f"\n{time.perf_counter() - start:.0f} s in all ({gen_seconds:.0f} s loading and sampling, "
        f"{detect_seconds:.0f} s null detection)")


if __name__ == "__main__":
  main()

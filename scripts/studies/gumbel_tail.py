"""Where float32 Gumbel noise is measurably wrong at temperature 1, and where it is not.

  python scripts/studies/gumbel_tail.py [--parts=marginal,head_tail,zipf] [--marginal_log2=28]
      [--head_tail_draws=16384] [--zipf_draws=65536] [--zipf=1.1,1.5]
      [--precisions=float32,float32_log1p,float32_highest,float64]
      [--zipf_precisions=float32,float32_log1p]

"Masked Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate
Categorical Sampling" (Zheng et al., 2024) found that Gumbel-max sampling with float32 noise
truncates the Gumbel tail and lowers the effective temperature. This prints markdown tables of
jaxtok.generators.samplers.categorical at temperature 1, fixed seeds, with timings:

(a) marginal: counts of g > t and g < t in 2^marginal_log2 draws per precision against the exact
    Gumbel law P(G > t) = 1 - exp(-exp(-t)), with z-scores; for float32 also its exact grid law.
    float32 draws u = k 2^-23 and floors every g to one of 2^23 grid points (15.94, 15.25,
    14.84, ... = 15.94 - log m at the top), so its upper tail is short by up to one grid point
    (q = 2^-23 = 1.2e-7) at every t and empty past 15.94.
(b) head_tail: logits [0, -D, ..., -D] over V = 50257 tokens. The exact tail probability is
    P(D) = (V - 1) e^-D / (1 + (V - 1) e^-D). Each draw's V Gumbels come from `gumbel`; the row
    is reduced to (g_head, max of the tail), and the tail wins when fl(-D + max) > g_head, which
    is exactly `sample_categorical`'s decision (checked on the first 16 rows at D = 12 and 17),
    so one set of draws serves every D. Printed: the observed tail rate against P(D) and against
    float32's derived grid rate; then the effective temperature T at which the exact law has the
    observed tail rate (T = D / log((1 - r)(V - 1) / r)) and the entropy of the sampled
    distribution, H(r) = -(1 - r) log(1 - r) - r log(r / (V - 1)) (the V - 1 tail tokens are
    exchangeable, so r determines it), against the exact entropy.
(c) zipf: logits -s log(rank) over V = 50257, zipf_draws independent positions through
    `sample_categorical` (float32 and float32_log1p by default; the others cost ~3x). Printed:
    the mean of -log p(x) over the drawn tokens (the samples' negative log-likelihood under the
    true law, as in generative perplexity; its expectation is the entropy H) with its standard
    error, the effective temperature at which the exact law has that NLL, draws of tokens with
    p < 1e-6 (z against the exact expectation), and distinct tokens (expected
    sum_i 1 - (1 - p_i)^N). A "float32 grid (predicted)" row gives the same quantities for
    float32's law as derived from its grid (tokens with p <= 2e-5 at their grid rate, the lost
    mass spread over the rest in proportion to p; an approximation, stated in the code).
    Zipf(1.1) puts 2.8e-3 on tokens below p = 1e-6, where float32 loses ~6%: at 65k positions
    only its distinct-token count is ~2 sd low. Zipf(1.5) puts 7e-3 on 45k tokens there, where
    float32 draws ~30% too few.

The float64 precision runs under `jax.enable_x64(True)`. Compile time is excluded from the
timings (each jitted function runs once on a small input first).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from benchmarks.machine import describe  # noqa: E402
from jaxtok.generators.samplers.categorical import (  # noqa: E402
  PRECISIONS,
  gumbel,
  gumbel_cap,
  sample_categorical,
)

Q32 = 2.0**-23  # float32 uniform grid step
V = 50257
UPPER = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 15.0, 15.5, 16.0, 17.0, 18.0, 20.0)
LOWER = (-2.75, -2.5, -2.0, -1.5)
HEAD_TAIL_D = (12.0, 14.0, 15.0, 16.0, 17.0, 18.0, 20.0)
CHUNK = 2**24  # marginal draws per jitted call
ROWS = 16  # rows of [V] per step in (b) and (c)
BLOCK = 64  # steps per jitted call in (b) and (c): draws come in multiples of ROWS * BLOCK


def block_keys(key: jax.Array, call) -> jax.Array:  # key [BLOCK]: steps call*BLOCK .. +BLOCK-1
  return jax.vmap(lambda step: jax.random.fold_in(key, step))(call * BLOCK + jnp.arange(BLOCK))


def _x64(precision: str):
  return jax.enable_x64(precision == "float64")


# --- exact and float32-grid laws ----------------------------------------------------------------


def exact_upper(t: float) -> float:
  return -math.expm1(-math.exp(-t))


def exact_lower(t: float) -> float:
  return math.exp(-math.exp(-t))


def float32_upper(t: float) -> float:
  """P(g > t) on the float32 grid u = k q, k = 1 .. 2^23 - 1 (k = 0 is tiny: g = -4.47)."""
  return max(2**23 - 1 - math.floor(exact_lower(t) / Q32), 0) * Q32


def float32_lower(t: float) -> float:
  return min(math.ceil(exact_lower(t) / Q32), 2**23) * Q32


def head_tail_exact(d: float) -> float:
  a = (V - 1) * math.exp(-d)
  return a / (1 + a)


def head_tail_float32(d: float) -> float:
  """Tail rate of float32 on its grid: P(M = G_m) for the max of V - 1 grid draws, times the
  grid probability that the head is below G_m - D (G_m = -log(-log(1 - m q)))."""
  m = np.arange(1, 2**17 + 1, dtype=np.float64)  # lower G_m contribute nothing for D >= 12
  grid = -np.log(-np.log1p(-m * Q32))
  at_most = np.exp((V - 1) * np.log1p(-(m - 1) * Q32))
  below = np.exp((V - 1) * np.log1p(-m * Q32))
  head_below = np.minimum(np.ceil(np.exp(-np.exp(-(grid - d))) / Q32) * Q32, 1.0)
  return float(np.sum((at_most - below) * head_below))


def effective_temperature(r: float, d: float) -> float:
  """T with (V - 1) e^(-D/T) / (1 + (V - 1) e^(-D/T)) = r."""
  return d / math.log((1 - r) * (V - 1) / r) if 0 < r < 1 else float("nan")


def head_tail_entropy(r: float) -> float:
  if r <= 0:
    return 0.0
  return -(1 - r) * math.log1p(-r) - r * math.log(r / (V - 1))


def float32_win_rate(a: np.ndarray) -> np.ndarray:
  """Relative rate at which float32 draws a rare token whose competitors' max is (to a good
  approximation, for a rare token) an exact Gumbel at a = log(Z_-i) - l_i, its own noise on the
  grid: sum_m q exp(-e^(a - G_m)) (1 + e^a) over the top 2^14 grid points (G_m > 6.2), the rest
  of the grid treated as continuous; tabulated over 2001 values of a and interpolated. Valid for
  a >= ~11 (p <= ~2e-5), where the terms below G = 6.2 vanish."""
  m = np.arange(1, 2**14 + 1, dtype=np.float64)
  grid = -np.log(-np.log1p(-m * Q32))
  table = np.linspace(a.min(), a.max(), 2001)
  top = np.sum(Q32 * np.exp(-np.exp(table[:, None] - grid[None, :])), axis=1)
  rest = np.exp(-math.exp(-grid[-1]) * (1 + np.exp(table))) / (1 + np.exp(table))
  return np.interp(a, table, (top + rest) * (1 + np.exp(table)))


def fmt_count(count: int, expected: float) -> str:
  if expected <= 0:
    return f"{count}"
  z = (count - expected) / math.sqrt(expected)
  return f"{count} ({z:+.1f})"


# --- (a) marginal tail counts -------------------------------------------------------------------


def marginal(precisions, log2: int, seed: int) -> None:
  n = 2**log2
  chunks = max(1, n // CHUNK)
  size = min(n, CHUNK)
  edges = np.array(sorted(LOWER + UPPER))
  rows = {}
  for i, precision in enumerate(precisions):
    def bucket(key, precision=precision):  # int8 [size]: the number of edges below each draw
      g = gumbel(key, (size,), precision)
      return sum((g > e).astype(jnp.int8) for e in edges), jnp.max(g), jnp.min(g)

    key = jax.random.key(seed * 1000 + 10 + i)  # distinct streams: log1p and highest share bits
    with _x64(precision):
      f = jax.jit(bucket)
      jax.block_until_ready(f(key))
      hist = np.zeros(len(edges) + 1, np.int64)
      gmax, gmin = -np.inf, np.inf
      start = time.perf_counter()
      for c in range(chunks):
        b, hi, lo = f(jax.random.fold_in(key, c))
        hist += np.bincount(np.asarray(b), minlength=len(edges) + 1)
        gmax, gmin = max(gmax, float(hi)), min(gmin, float(lo))
      seconds = time.perf_counter() - start
    above = np.cumsum(hist[::-1])[::-1]
    rows[precision] = ({e: int(above[j + 1]) for j, e in enumerate(edges)}, gmax, gmin, seconds)

  total = chunks * size
  print(f"\n### (a) Marginal Gumbel tail, {total:,} draws per precision "
        f"(2^{int(math.log2(total))}); count (z against the exact law)\n")
  head = "| event | exact n P | float32 grid n P | " + " | ".join(precisions) + " |"
  print(head)
  print("|" + "---|" * (3 + len(precisions)))
  for t in LOWER:
    ex = total * exact_lower(t)
    cells = [fmt_count(total - rows[p][0][t], ex) for p in precisions]
    print(f"| g < {t} | {ex:.1f} | {total * float32_lower(t):.1f} | " + " | ".join(cells) + " |")
  for t in UPPER:
    ex = total * exact_upper(t)
    cells = [fmt_count(rows[p][0][t], ex) for p in precisions]
    print(f"| g > {t} | {ex:.1f} | {total * float32_upper(t):.1f} | " + " | ".join(cells) + " |")
  print("| max g (cap) | | | " + " | ".join(
      f"{rows[p][1]:.2f} ({gumbel_cap(p):.2f})" for p in precisions) + " |")
  print("| min g | | | " + " | ".join(f"{rows[p][2]:.2f}" for p in precisions) + " |")
  print("| seconds | | | " + " | ".join(f"{rows[p][3]:.1f}" for p in precisions) + " |")
  print("\nz uses the Poisson sd sqrt(n P). For float32 the exact grid law (column 3) is the "
        "right reference; it is one grid point below the exact law, which at t >= 14 is "
        "several percent.")


# --- (b) one head token, V - 1 tail tokens at gap D ---------------------------------------------


def head_tail(precisions, draws: int, seed: int) -> None:
  calls = draws // (ROWS * BLOCK)
  results = {}
  for i, precision in enumerate(precisions):
    def pair(key, precision=precision):  # ([ROWS], [ROWS]): g_head and the max tail Gumbel
      g = gumbel(key, (ROWS, V), precision)
      return g[:, 0], jnp.max(jnp.where(jnp.arange(V) == 0, -jnp.inf, g), axis=-1)

    def block(key, call, pair=pair):  # ([BLOCK, ROWS], [BLOCK, ROWS])
      keys = block_keys(key, call)
      return jax.lax.map(pair, keys)

    key = jax.random.key(seed * 1000 + 20 + i)
    with _x64(precision):
      f = jax.jit(block)
      jax.block_until_ready(f(key, 0))
      start = time.perf_counter()
      out = [f(key, c) for c in range(calls)]
      gh, gm = (np.concatenate([np.asarray(o[j]).reshape(-1) for o in out]) for j in (0, 1))
      seconds = time.perf_counter() - start
      # The shortcut is the sampler: same key and shape -> same noise -> same decisions.
      for d in (12.0, 17.0):
        logits = jnp.where(jnp.arange(V) == 0, 0.0, -d)
        tokens = np.asarray(sample_categorical(jax.random.fold_in(key, 0),
                                               jnp.broadcast_to(logits, (ROWS, V)),
                                               precision=precision))
        mine = (gm[:ROWS].dtype.type(-d) + gm[:ROWS]) > gh[:ROWS]
        if not np.array_equal(tokens != 0, mine):
          raise AssertionError(f"{precision}: the (g_head, max) shortcut disagrees with "
                               f"sample_categorical at D = {d}")
    dtype = gm.dtype.type
    counts = {d: int(np.sum((dtype(-d) + gm) > gh)) for d in HEAD_TAIL_D}
    results[precision] = (counts, seconds)

  n = calls * BLOCK * ROWS
  print(f"\n### (b) One head token and V - 1 = {V - 1:,} tail tokens at logit gap D, {n:,} draws "
        f"of [V] per precision; tail draws (z against the exact rate)\n")
  print("| D | exact P(tail) | exact n P | float32 grid n P | " + " | ".join(precisions) + " |")
  print("|" + "---|" * (4 + len(precisions)))
  for d in HEAD_TAIL_D:
    ex = head_tail_exact(d)
    cells = [fmt_count(results[p][0][d], n * ex) for p in precisions]
    print(f"| {d:g} | {ex:.3e} | {n * ex:.1f} | {n * head_tail_float32(d):.2f} | "
          + " | ".join(cells) + " |")
  print("| seconds | | | | " + " | ".join(f"{results[p][1]:.1f}" for p in precisions) + " |")

  print("\nEffective temperature T (the exact law at logits / T has the observed tail rate) and "
        "the entropy of the sampled distribution (nats); float32 grid = derived, no sampling "
        "noise.\n")
  print("| D | exact H | float32 grid: T, H | " + " | ".join(f"{p}: T, H" for p in precisions)
        + " |")
  print("|" + "---|" * (3 + len(precisions)))
  for d in HEAD_TAIL_D:
    r32 = head_tail_float32(d)
    cells = []
    for p in precisions:
      r = results[p][0][d] / n
      cells.append(f"{effective_temperature(r, d):.3f}, {head_tail_entropy(r):.4f}" if r > 0
                   else "0 draws: T < "
                   f"{effective_temperature(1 / n, d):.3f}, H 0")
    print(f"| {d:g} | {head_tail_entropy(head_tail_exact(d)):.4f} | "
          f"{effective_temperature(r32, d):.3f}, {head_tail_entropy(r32):.4f} | "
          + " | ".join(cells) + " |")


# --- (c) Zipf laws over many positions ----------------------------------------------------------


def zipf(precisions, draws: int, exponents, seed: int) -> None:
  calls = draws // (ROWS * BLOCK)
  n = calls * BLOCK * ROWS
  for s in exponents:
    logits_np = -s * np.log(np.arange(1, V + 1, dtype=np.float64))
    logp = logits_np - np.logaddexp.reduce(logits_np)
    p = np.exp(logp)
    entropy = float(-(p * logp).sum())
    sd = float(np.sqrt((p * logp**2).sum() - entropy**2))
    rare = p < 1e-6
    # float32's law, predicted: tokens with p <= 2e-5 drawn at p * float32_win_rate (their own
    # noise on the grid), the mass they lose spread over the others in proportion to p.
    small = p <= 2e-5
    p32 = p.copy()
    p32[small] = p[small] * float32_win_rate(np.log1p(-p[small]) - logp[small])
    p32[~small] *= 1 + (p[small].sum() - p32[small].sum()) / p[~small].sum()
    unseen = np.exp(n * np.log1p(-p))
    distinct_exact = float(np.sum(1 - unseen))
    # The indicators "token i drawn" are negatively correlated: this bounds the sd from above.
    distinct_sd = float(np.sqrt(np.sum(unseen * (1 - unseen))))
    distinct_32 = float(np.sum(-np.expm1(n * np.log1p(-p32))))
    nll_32 = float(-(p32 * logp).sum())

    def nll_at(t: float, logits_np=logits_np, logp=logp) -> float:
      lt = logits_np / t
      pt = np.exp(lt - np.logaddexp.reduce(lt))
      return float(-(pt * logp).sum())

    def temperature_for(nll: float, nll_at=nll_at) -> float:
      lo, hi = 0.5, 2.0  # nll_at increases with t
      for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if nll_at(mid) < nll else (lo, mid)
      return 0.5 * (lo + hi)

    rows = []
    for i, precision in enumerate(precisions):
      def draw(key, call, precision=precision, logits_np=logits_np):  # int32 [BLOCK, ROWS]
        keys = block_keys(key, call)
        logits = jnp.broadcast_to(jnp.asarray(logits_np, jnp.float32), (ROWS, V))
        return jax.lax.map(lambda kj: sample_categorical(kj, logits, precision=precision), keys)

      key = jax.random.key(seed * 1000 + 30 + i)
      with _x64(precision):
        f = jax.jit(draw)
        jax.block_until_ready(f(key, 0))
        start = time.perf_counter()
        tokens = np.concatenate([np.asarray(f(key, c)).reshape(-1) for c in range(calls)])
        seconds = time.perf_counter() - start
      nll = -logp[tokens]
      rows.append((precision, nll.mean(), nll.std(ddof=1) / math.sqrt(n),
                   temperature_for(nll.mean()), int(rare[tokens].sum()),
                   len(np.unique(tokens)), seconds))

    print(f"\n### (c) Zipf({s:g}) over V = {V:,}, {n:,} positions per precision\n")
    print(f"Exact: entropy {entropy:.4f} nats (sd of -log p {sd:.2f}, so the NLL se is "
          f"{sd / math.sqrt(n):.4f}); {rare.sum():,} tokens have p < 1e-6, with mass "
          f"{p[rare].sum():.3e} ({p32[rare].sum():.3e} predicted for float32).\n")
    print("| precision | NLL of samples (exact = H) | effective T | draws with p < 1e-6 "
          "(z vs exact) | distinct tokens | seconds |")
    print("|---|---|---|---|---|---|")
    print(f"| exact (expected) | {entropy:.4f} | 1 | {n * p[rare].sum():.1f} | "
          f"{distinct_exact:.0f} (sd <= {distinct_sd:.0f}) | |")
    print(f"| float32 grid (predicted) | {nll_32:.4f} | {temperature_for(nll_32):.4f} | "
          f"{n * p32[rare].sum():.1f} | {distinct_32:.0f} | |")
    for precision, mean, se, t, rare_draws, distinct, seconds in rows:
      print(f"| {precision} | {mean:.4f} +- {se:.4f} | {t:.4f} | "
            f"{fmt_count(rare_draws, n * p[rare].sum())} | {distinct} | {seconds:.1f} |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", default="marginal,head_tail,zipf")
  parser.add_argument("--precisions", default=",".join(PRECISIONS))
  parser.add_argument("--marginal_log2", type=int, default=28)
  parser.add_argument("--head_tail_draws", type=int, default=2**14)
  parser.add_argument("--zipf_draws", type=int, default=2**16)
  parser.add_argument("--zipf_precisions", default="float32,float32_log1p",
                      help="precisions for part (c); float32_highest and float64 cost ~3x")
  parser.add_argument("--zipf", default="1.1,1.5", help="Zipf exponents for part (c)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  parts = args.parts.split(",")
  precisions = args.precisions.split(",")
  zipf_precisions = args.zipf_precisions.split(",")
  for name in precisions + zipf_precisions:
    if name not in PRECISIONS:
      raise SystemExit(f"unknown precision {name!r}; valid: {PRECISIONS}")
  for name in parts:
    if name not in ("marginal", "head_tail", "zipf"):
      raise SystemExit(f"unknown part {name!r}; valid: marginal, head_tail, zipf")
  if args.head_tail_draws % (ROWS * BLOCK) or args.zipf_draws % (ROWS * BLOCK):
    raise SystemExit(f"--head_tail_draws and --zipf_draws must be multiples of {ROWS * BLOCK}")
  print(f"Machine: {describe()}")
  print(f"Temperature 1; seed {args.seed}; float64 under jax.enable_x64(True).")
  start = time.perf_counter()
  if "marginal" in parts:
    marginal(precisions, args.marginal_log2, args.seed)
  if "head_tail" in parts:
    head_tail(precisions, args.head_tail_draws, args.seed)
  if "zipf" in parts:
    zipf(zipf_precisions, args.zipf_draws, [float(s) for s in args.zipf.split(",")], args.seed)
  print(f"\nTotal {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
  main()

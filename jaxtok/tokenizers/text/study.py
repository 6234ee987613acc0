"""The token-premium study of Arnett et al. (2025) on any parallel text, as config-free functions.

Inputs are plain ``{language: [text]}`` dicts: ``train`` (each language's own training messages)
and ``eval`` (held-out parallel messages, aligned, English under ``"en"``).

* :func:`monolingual_grid`: the paper's design. One tokenizer per language per vocabulary size,
  trained on that language alone; CTC on its held-out side. Same-V differences are then due to the
  language (its script, whitespace, morphology), not to its share of a multilingual corpus.
* :func:`shared_grid`: one multilingual tokenizer per size, trained on every language's training
  text together (how LM tokenizers are built); premiums per language.
* :func:`predictors`: R^2 of CTC on whitespace share, script group, bytes/char, length ratio.
* :func:`vocab_spread`: does a larger V shrink the spread (F test, smallest vs largest V)?
* :func:`per_language_vocab`: the paper's App. J mitigation: a power law per language, a V per
  language for a target CTC, tokenizers trained at those sizes, spread against a shared V.
* :func:`superword_effect`: SuperBPE against BPE at the same V (paired t, F test, whitespace R^2).

Spreads are compared on log CTC (equivalently log premium), so a size that shrinks every count by
the same factor does not count as shrinking the spread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxtok.tokenizers.text import analysis
from jaxtok.tokenizers.text.premiums import REFERENCE, count_tokens, premium, text_properties
from jaxtok.tokenizers.text.trainers import train_tokenizer

Texts = Mapping[str, Sequence[str]]
Grid = dict[int, dict[str, int]]  # vocab size -> {language: CTC}
Log = Callable[[str], None]


def _log(log: Log | None, text: str) -> None:
  if log is not None:
    log(text)


def monolingual_grid(train: Texts, eval_texts: Texts, kind: str, vocab_sizes: Sequence[int], *,
                     transition: float = 0.9, log: Log | None = None
                     ) -> tuple[Grid, dict[int, dict[str, int]]]:
  """({V: {language: CTC}}, {V: {language: vocabulary size reached}}) of per-language tokenizers."""
  ctc: Grid = {}
  reached: dict[int, dict[str, int]] = {}
  for v in vocab_sizes:
    ctc[v], reached[v] = {}, {}
    for lang in eval_texts:
      tok = train_tokenizer(kind, train[lang], v, transition=transition)
      ctc[v][lang] = tok.count(eval_texts[lang])
      reached[v][lang] = tok.vocab_size
    _log(log, f"monolingual {kind} V={v}: {len(eval_texts)} languages")
  return ctc, reached


def shared_grid(train: Texts, eval_texts: Texts, kind: str, vocab_sizes: Sequence[int], *,
                transition: float = 0.9, log: Log | None = None) -> tuple[Grid, dict[int, int]]:
  """({V: {language: CTC}}, {V: vocabulary size reached}) of one multilingual tokenizer per size
  (trained on all of ``train``)."""
  corpus = [t for lang in sorted(train) for t in train[lang]]
  out: Grid = {}
  reached: dict[int, int] = {}
  for v in vocab_sizes:
    tok = train_tokenizer(kind, corpus, v, transition=transition)
    out[v] = {lang: tok.count(t) for lang, t in eval_texts.items()}
    reached[v] = tok.vocab_size
    _log(log, f"shared {kind} V={v}: vocabulary {tok.vocab_size}")
  return out, reached


def premiums_of(ctc: Mapping[str, int], reference: str = REFERENCE) -> dict[str, float]:
  return {lang: premium(c, ctc[reference]) for lang, c in ctc.items()}


def encoder_premiums(encoders: Mapping[str, Callable[[str], Sequence[int]]], eval_texts: Texts
                     ) -> dict[str, dict[str, float]]:
  """{name: {language: premium}} of existing tokenizers (encode callables)."""
  return {name: premiums_of({lang: count_tokens(enc, t) for lang, t in eval_texts.items()})
          for name, enc in encoders.items()}


def _languages(ctc: Mapping[str, int], reference: str) -> list[str]:
  return sorted(lang for lang in ctc if lang != reference)


def predictors(ctc: Mapping[str, int], props: Mapping[str, Mapping], *,
               reference: str = REFERENCE) -> dict[str, float]:
  """R^2 of each language's premium (at one V) on each predictor and on all of them together."""
  langs = _languages(ctc, reference)
  y = [ctc[lang] / ctc[reference] for lang in langs]
  cols = {k: [float(props[lang][k]) for lang in langs]
          for k in ("whitespace", "bytes_per_char", "length_ratio")}
  out = {k: analysis.r_squared(y, v) for k, v in cols.items()}
  groups = [props[lang]["group"] for lang in langs]
  out["script_group"] = analysis.group_r_squared(y, groups)
  onehot = [[g == n for n in sorted(set(groups))[1:]] for g in groups]
  out["all"] = analysis.r_squared(y, np.column_stack([*cols.values(), np.array(onehot, float)]))
  return out


def spread_of(prem: Mapping[str, float], reference: str = REFERENCE) -> dict[str, float]:
  """Mean, min, max premium and the standard deviation of log premium across languages."""
  p = np.array([v for lang, v in prem.items() if lang != reference])
  return {"mean": float(p.mean()), "min": float(p.min()), "max": float(p.max()),
          "sd_log": float(np.std(np.log(p), ddof=1))}


def vocab_spread(grid: Grid, reference: str = REFERENCE) -> dict[str, float]:
  """F test of var(log CTC) at the smallest against the largest V (H0: V leaves it unchanged)."""
  lo, hi = min(grid), max(grid)
  langs = _languages(grid[lo], reference)
  f, p = analysis.variance_ratio_test(np.log([grid[lo][x] for x in langs]),
                                      np.log([grid[hi][x] for x in langs]))
  return {"v_small": lo, "v_large": hi, "F": f, "p": p, "df": len(langs) - 1}


def per_language_vocab(train: Texts, eval_texts: Texts, grid: Grid, *, kind: str = "bpe",
                       targets: Sequence[float] | None = None,
                       bounds: tuple[int, int] = (300, 8192), transition: float = 0.9,
                       log: Log | None = None) -> list[dict]:
  """For each target CTC: V_L from L's fitted power law, a tokenizer trained at V_L, and the
  spread of the CTCs reached against the shared V whose median CTC is closest to the target.

  ``targets`` default to the median CTC of the languages at each inner grid size."""
  sizes = sorted(grid)
  langs = list(eval_texts)
  fits = {lang: analysis.fit_power_law(sizes, [grid[v][lang] for v in sizes]) for lang in langs}
  if targets is None:
    targets = [float(np.median([grid[v][x] for x in langs])) for v in sizes[1:-1]]
  rows = []
  for target in targets:
    vocab = {x: int(round(analysis.vocab_for_target(fits[x], target, *bounds))) for x in langs}
    got = {x: train_tokenizer(kind, train[x], vocab[x], transition=transition).count(eval_texts[x])
           for x in langs}
    shared_v = min(sizes, key=lambda v: abs(np.median([grid[v][x] for x in langs]) - target))
    shared = np.log([grid[shared_v][x] for x in langs])
    own = np.log([got[x] for x in langs])
    f, p = analysis.variance_ratio_test(shared, own)
    rows.append({"target": float(target), "shared_v": shared_v, "vocab": vocab, "ctc": got,
                 "sd_log_shared": float(np.std(shared, ddof=1)),
                 "sd_log_own": float(np.std(own, ddof=1)), "F": f, "p": p,
                 "rmse": float(np.sqrt(np.mean([(got[x] - target) ** 2 for x in langs])))})
    _log(log, f"per-language V for target CTC {target:.0f}: sd log {rows[-1]['sd_log_shared']:.3f}"
              f" (shared V={shared_v}) -> {rows[-1]['sd_log_own']:.3f}")
  return rows


def superword_effect(base: Grid, superword: Grid, props: Mapping[str, Mapping], *,
                     reference: str = REFERENCE) -> list[dict]:
  """Per V: CTC change, paired t, F test of var(log CTC) (base / superword), and the whitespace
  R^2 of both."""
  rows = []
  for v in sorted(set(base) & set(superword)):
    langs = sorted(base[v])
    a = np.array([base[v][x] for x in langs], float)
    b = np.array([superword[v][x] for x in langs], float)
    t, p_t = analysis.paired_t_test(a, b)
    f, p_f = analysis.variance_ratio_test(np.log(a), np.log(b))
    rows.append({"V": v, "ctc_change": float(b.sum() / a.sum() - 1), "t": t, "p_t": p_t,
                 "F": f, "p_F": p_f,
                 "whitespace_r2_base": predictors(base[v], props, reference=reference)[
                     "whitespace"],
                 "whitespace_r2_superword": predictors(superword[v], props,
                                                       reference=reference)["whitespace"]})
  return rows


def by_group(values: Mapping[str, float], props: Mapping[str, Mapping], key: str = "script"
             ) -> dict[str, float]:
  """Mean of ``values`` per script (``key='script'``) or script group (``'group'``)."""
  groups: dict[str, list[float]] = {}
  for lang, v in values.items():
    groups.setdefault(str(props[lang][key]), []).append(v)
  return {g: float(np.mean(v)) for g, v in sorted(groups.items())}


def properties(eval_texts: Texts, reference: str = REFERENCE) -> dict[str, dict]:
  return text_properties(eval_texts, reference=reference)

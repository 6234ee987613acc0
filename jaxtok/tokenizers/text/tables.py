"""Markdown tables of a token-premium study's results (the dict the ``token_premiums`` task
writes to ``token_premiums.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jaxtok.tokenizers.text.premiums import REFERENCE
from jaxtok.tokenizers.text.study import spread_of


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  def cell(x):
    if isinstance(x, float):
      return f"{x:.3g}" if abs(x) < 1e-3 and x != 0 else f"{x:.3f}".rstrip("0").rstrip(".") \
          if abs(x) < 100 else f"{x:.0f}"
    return str(x)

  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
  return "\n".join(lines)


def _premium(ctc: Mapping[str, int], lang: str) -> float:
  return ctc[lang] / ctc[REFERENCE]


def language_table(results: Mapping[str, Any], columns: Mapping[str, Mapping[str, float]]) -> str:
  """One row per language (by the first column's premium): script, whitespace share, premiums."""
  props = results["properties"]
  first = next(iter(columns.values()))
  langs = sorted((x for x in first if x != REFERENCE), key=lambda x: first[x])
  rows = [[x, props[x]["script"], props[x]["whitespace"], *[c[x] for c in columns.values()]]
          for x in langs]
  return markdown(["language", "script", "whitespace", *columns], rows)


def spread_table(results: Mapping[str, Any]) -> str:
  """Premium statistics per tokenizer; for per-language tokenizers, how many languages' training
  text ran out of pairs before reaching V (their vocabulary is smaller)."""
  rows = []
  for family in ("shared", "monolingual"):
    for kind, grid in results.get(family, {}).items():
      reached = results.get(f"{family}_reached", {}).get(kind, {})
      for v, s in sorted(grid_spreads(grid).items()):
        got = reached.get(v, {})
        short = sum(n < v for n in got.values()) if isinstance(got, dict) else int(got < v)
        rows.append([family, kind, v, s["mean"], s["min"], s["max"], s["sd_log"], short])
  for name, prem in results.get("pretrained", {}).items():
    s = spread_of(prem)
    rows.append(["pretrained", name, "", s["mean"], s["min"], s["max"], s["sd_log"], ""])
  return markdown(["tokenizers", "kind", "V", "mean premium", "min", "max", "sd log premium",
                   "languages short of V"], rows)


def grid_spreads(grid: Mapping[int, Mapping[str, int]]) -> dict[int, dict[str, float]]:
  return {v: spread_of({x: _premium(ctc, x) for x in ctc}) for v, ctc in grid.items()}


def predictor_table(results: Mapping[str, Any]) -> str:
  rows = []
  for family, by_kind in results.get("predictors", {}).items():
    for kind, by_v in by_kind.items():
      for v, r2 in sorted(by_v.items()):
        rows.append([family, kind, v, r2["whitespace"], r2["script_group"], r2["bytes_per_char"],
                     r2["length_ratio"], r2["all"]])
  return markdown(["tokenizers", "kind", "V", "R² whitespace", "R² script group",
                   "R² bytes/char", "R² length ratio", "R² all"], rows)


def vocab_spread_table(results: Mapping[str, Any]) -> str:
  rows = [[family, kind, r["v_small"], r["v_large"], r["F"], r["df"], r["p"]]
          for family, by_kind in results.get("vocab_spread", {}).items()
          for kind, r in by_kind.items()]
  return markdown(["tokenizers", "kind", "V small", "V large",
                   "F = var(log CTC) small / large", "df", "p"], rows)


def per_language_table(results: Mapping[str, Any]) -> str:
  rows = [[r["target"], r["shared_v"], r["sd_log_shared"], r["sd_log_own"], r["F"], r["p"],
           r["rmse"], min(r["vocab"].values()), max(r["vocab"].values())]
          for r in results.get("per_language_vocab", [])]
  return markdown(["target CTC", "closest shared V", "sd log CTC shared V",
                   "sd log CTC own V", "F", "p", "RMSE to target", "V min", "V max"], rows)


def superword_table(results: Mapping[str, Any]) -> str:
  rows = [[family, r["V"], r["ctc_change"], r["t"], r["p_t"], r["F"], r["p_F"],
           r["whitespace_r2_base"], r["whitespace_r2_superword"]]
          for family, by in results.get("superword", {}).items() for r in by]
  return markdown(["tokenizers", "V", "CTC change", "paired t", "p", "F (BPE / SuperBPE)", "p",
                   "R² whitespace BPE", "R² whitespace SuperBPE"], rows)


def script_table(results: Mapping[str, Any], family: str, kind: str) -> str:
  """Mean premium per script group (rows) at each V (columns)."""
  grid = results.get(family, {}).get(kind)
  if not grid:
    return ""
  groups = results["properties"]
  sizes = sorted(grid)
  names = sorted({groups[x]["group"] for x in grid[sizes[0]] if x != REFERENCE})
  rows = []
  for g in names:
    langs = [x for x in grid[sizes[0]] if x != REFERENCE and groups[x]["group"] == g]
    rows.append([f"{g} ({len(langs)})", *[sum(_premium(grid[v], x) for x in langs) / len(langs)
                                         for v in sizes]])
  return markdown(["script group", *[f"V={v}" for v in sizes]], rows)


def all_tables(results: Mapping[str, Any]) -> str:
  """Every table, with headings, as one markdown document."""
  parts = [f"# Token premiums ({len(results['languages'])} languages, "
           f"{results['messages']['eval']} held-out parallel messages)"]
  columns = dict(results.get("pretrained", {}))
  for family in ("shared", "monolingual"):
    for kind, grid in results.get(family, {}).items():
      v = max(grid) if family == "shared" else sorted(grid)[len(grid) // 2]
      columns[f"{family} {kind} {v}"] = {x: _premium(grid[v], x) for x in grid[v]}
  parts += ["## Premium per language", language_table(results, columns)]
  parts += ["## Spread", spread_table(results)]
  parts += ["## Mean premium per script group"]
  for family in ("shared", "monolingual"):
    for kind in results.get(family, {}):
      parts += [f"{family} {kind}", script_table(results, family, kind)]
  parts += ["## What predicts premiums (R² across languages)", predictor_table(results)]
  parts += ["## Does a larger vocabulary shrink the spread?", vocab_spread_table(results)]
  if results.get("per_language_vocab"):
    parts += ["## Per-language vocabulary size", per_language_table(results)]
  if results.get("superword"):
    parts += ["## Superword tokenizers (SuperBPE vs BPE)", superword_table(results)]
  return "\n\n".join(parts) + "\n"

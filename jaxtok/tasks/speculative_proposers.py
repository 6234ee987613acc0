"""Proposer builders of the ``speculative`` task: ``config.proposer.name`` -> a :class:`Plan`.

A proposer family is one registration in ``PROPOSER_BUILDERS`` (here, or in its own
``tasks/speculative_<name>.py`` imported by ``jaxtok/tasks/__init__.py``). A builder reads the
config, checks its options (so a bad one fails at build time, before anything compiles) and
returns a :class:`Plan`: the proposer object the engine runs, the draft model whose params live
under ``params['draft']`` (if any), and hooks for what some families do outside the engine:

- ``prepare(params)``: the proposer's params, made once per run from the task's params (a trimmed
  head, exit norms trained on the target's hidden states, an empty adjacency matrix);
- ``carry(proposer_params, stats)``: what the next batch starts from (Token Recycling's hot start);
- ``choose(params, proposer_params, tokens, mask)``: a proposer (and its params) picked per
  left-padded batch of prompts (DEL's exit layer and draft length from shadow tokens); its time
  counts as speculative time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtok import paths
from jaxtok.decoding import early_exit as ee
from jaxtok.decoding.proposers import DraftModel, LMStep, PromptLookup, TokenRecycling
from jaxtok.decoding.trees import TreeTemplate, best_tree
from jaxtok.decoding.vocab_trim import TrimmedLMStep, VocabTrimDraft, kept_ids, trim_params
from jaxtok.generators.causal_lm import CausalLM, LMConfig, lm_config
from jaxtok.pretrained.lms import load_pretrained_lm
from jaxtok.pretrained.text_tokenizer import ByteTokenizer
from jaxtok.registry import Registry
from jaxtok.tasks.distill import restore_student, student_record
from jaxtok.tasks.vocab_trim_counts import target_counts
from jaxtok.train.validate import UserError


@dataclasses.dataclass(frozen=True)
class Target:
  """What a builder may read about the target."""

  arch: LMConfig
  model: CausalLM
  name: str  # for messages
  pretrained: str | None  # a PRETRAINED_LMS name (a cache key), None for a random target
  tokenizer: Any
  stops: tuple[int, ...]
  dtype: str


@dataclasses.dataclass(frozen=True)
class Plan:
  proposer: Any  # the engine's proposer (jaxtok/decoding/proposers.py protocol)
  draft: CausalLM | None = None  # a model with params['draft'] (random init unless draft_host)
  draft_host: Any = None  # its host params
  draft_name: str = ""
  prepare: Callable[[dict], Any] = lambda params: None
  carry: Callable[[Any, dict], Any] | None = None
  choose: Callable[[dict, Any, Any, Any], tuple[Any, Any]] | None = None
  # Every proposer ``choose`` may return, for sizing caches and the prompt room.
  candidates: tuple[Any, ...] = ()
  shape: str = ""  # what one round proposes, for the run's one-line description

  @property
  def largest_tree(self) -> TreeTemplate:
    return max((c.template for c in self.candidates or (self.proposer,)), key=lambda t: t.size)

  @property
  def max_len(self) -> int | None:
    """The draft's context length, when its cache bounds the prompt."""
    return None if self.draft is None else self.draft.max_len


PROPOSER_BUILDERS: Registry[Callable[[ml_collections.ConfigDict, Target], Plan]] = Registry(
    "proposer")


def load_lm(pretrained: str | None, variant: str | None, what: str):
  """(arch, host params or None, tokenizer, chat, stops, name) of a pretrained or random LM."""
  if pretrained:
    lm = load_pretrained_lm(pretrained)
    return lm.config, lm.params, lm.tokenizer, lm.chat, tuple(lm.stop_tokens), pretrained
  if not variant:
    raise ValueError(f"set {what}.pretrained or {what}.variant")
  return lm_config(variant), None, ByteTokenizer(), False, (ByteTokenizer().eos_id,), variant


def load_draft(config, target: Target) -> tuple[LMConfig, Any, str]:
  d = config.draft
  if d.get("workdir"):
    if not paths.exists(d.workdir):
      raise FileNotFoundError(f"draft.workdir {d.workdir!r} does not exist: train a draft there "
                              "first (configs/decoding/draft_distill.py)")
    d_arch, _ = student_record(d.workdir)
    name = f"draft.workdir {d.workdir!r}"
    _check_vocab(d_arch, target, name)  # before the restore compiles anything
    return d_arch, restore_student(d.workdir)[1], name
  d_arch, d_host, *_, name = load_lm(d.get("pretrained"), d.get("variant"), "draft")
  _check_vocab(d_arch, target, f"draft {name!r}")
  return d_arch, d_host, f"draft {name!r}"


def _check_vocab(d_arch: LMConfig, target: Target, d_name: str) -> None:
  if d_arch.vocab_size != target.arch.vocab_size:
    raise ValueError(f"the {d_name} has vocab_size {d_arch.vocab_size} but the target "
                     f"{target.name!r} has {target.arch.vocab_size}: a draft must share the "
                     "vocabulary")


def _chain_shape(proposer) -> str:
  return f"{proposer.num_drafts} x {proposer.length} tokens"


@PROPOSER_BUILDERS.register("draft")
def build_draft(config, target: Target) -> Plan:
  """A separate draft LM (``config.draft``: a distill workdir, a pretrained name or a variant)."""
  p = config.proposer
  d_arch, d_host, d_name = load_draft(config, target)
  d_model = CausalLM.from_config(d_arch, dtype=target.dtype)
  proposer = DraftModel(LMStep(d_model), length=int(p.length), num_drafts=int(p.num_drafts),
                        temperature=float(p.draft_temperature))
  return Plan(proposer, draft=d_model, draft_host=d_host, draft_name=d_name,
              prepare=lambda params: params["draft"], shape=_chain_shape(proposer))


@PROPOSER_BUILDERS.register("vocabtrim")
def build_vocabtrim(config, target: Target) -> Plan:
  """VocabTrim: the draft model with its head cut to the ids the target generates most often
  (counted once on train-split code prompts, cached for a pretrained target)."""
  p = config.proposer
  if int(p.trim_size) < 1:
    raise ValueError(f"proposer.trim_size must be >= 1, got {p.trim_size}")
  d_arch, d_host, d_name = load_draft(config, target)
  d_model = CausalLM.from_config(d_arch, dtype=target.dtype)
  proposer = VocabTrimDraft(TrimmedLMStep(d_model), length=int(p.length),
                            num_drafts=int(p.num_drafts),
                            temperature=float(p.draft_temperature))
  trimmed: dict = {}

  def prepare(params):
    if not trimmed:
      counts = target_counts(
          target.model, params["target"], target.tokenizer.encode, target.stops,
          vocab_size=target.arch.vocab_size, num_prompts=int(p.count_prompts),
          new_tokens=int(p.count_new_tokens), max_prompt_tokens=int(p.count_prompt_tokens),
          cache_name=target.pretrained)
      kept = kept_ids(counts, int(p.trim_size), target.stops)
      trimmed.update(trim_params(params["draft"], kept))
    return trimmed

  return Plan(proposer, draft=d_model, draft_host=d_host, draft_name=d_name, prepare=prepare,
              shape=_chain_shape(proposer) + f", head of {int(p.trim_size)} ids")


@PROPOSER_BUILDERS.register("ngram")
def build_ngram(config, target: Target) -> Plan:
  """n-gram prompt lookup (no model). With ``proposer.lengths`` it picks each round's draft
  length (0 = a plain step) by expected tokens per cost; ``proposer.cost``: ``equal`` (every
  verify pass costs the same, as on an accelerator) or ``measured`` (a target pass over 1 + g
  tokens timed on this machine, once per batch size, at the first batch of that size)."""
  p = config.proposer
  lengths = tuple(int(g) for g in p.get("lengths", ()))
  cost = p.get("cost", "equal")
  if cost not in ("equal", "measured"):
    raise UserError(f"proposer.cost must be 'equal' or 'measured', got {cost!r}")
  try:
    proposer = PromptLookup(length=int(p.length), max_ngram=int(p.max_ngram),
                            min_ngram=int(p.min_ngram), lengths=lengths)
  except ValueError as e:
    raise UserError(f"proposer: {e}") from None
  shape = f"{proposer.length} tokens"
  if not lengths:
    return Plan(proposer, shape=shape)
  shape = f"0..{proposer.length} tokens a round ({', '.join(map(str, lengths))}; {cost} costs)"
  if cost == "equal":
    return Plan(proposer, shape=shape)
  timed, context = {}, int(p.get("cost_context", 256))

  def choose(params, prop_params, tokens, mask):
    del mask
    b = int(tokens.shape[0])
    if b not in timed:  # the task's first, untimed call for this batch size
      timed[b] = verify_costs(target.model, params["target"], lengths, context, b)
    return dataclasses.replace(proposer, costs=timed[b]), prop_params

  return Plan(proposer, choose=choose, candidates=(proposer,), shape=shape)


def verify_costs(model: CausalLM, params, lengths: tuple[int, ...], context: int,
                 batch: int) -> tuple[float, ...]:
  """Seconds of a target pass over 1 + g tokens for each g of ``lengths`` (``batch`` rows after
  ``context`` cached tokens; best of 5, compile excluded; made non-decreasing in g), printed."""
  raw = [ee.step_seconds(LMStep(model), params, model, 1 + g, context, batch=batch)
         for g in lengths]
  # A pass over more tokens does not cost less; a timing that says so is noise (at batch 8 a
  # 2-token pass once timed 3% below the 1-token step, and the plain step was never chosen).
  costs = tuple(float(c) for c in np.maximum.accumulate(raw))
  print(f"verify pass costs (ms, batch {batch}, after {context} cached tokens): " + ", ".join(
      f"g={g} {1e3 * c:.2f}" + (f" (timed {1e3 * r:.2f})" if r < c else "")
      for g, c, r in zip(lengths, costs, raw)), flush=True)
  return costs


@PROPOSER_BUILDERS.register("recycling")
def build_recycling(config, target: Target) -> Plan:
  """Token Recycling: a static tree filled from the adjacency matrix of the target's top-k;
  ``proposer.hot_start`` carries the matrix from batch to batch (the paper's hot start)."""
  p = config.proposer
  tree = best_tree(int(p.tree_nodes), tuple(p.rank_accept), max_depth=int(p.tree_depth))
  proposer = TokenRecycling(tree, vocab_size=target.arch.vocab_size, top_k=int(p.top_k))
  # Always an argument (never None), so the first batch compiles the program later ones reuse.
  cold = np.zeros((target.arch.vocab_size, int(p.top_k)), np.int32)
  carry = (lambda prev, stats: {"adjacency": jnp.asarray(stats["proposer_state"]["adjacency"])}
           ) if p.hot_start else None
  return Plan(proposer, prepare=lambda params: {"adjacency": jnp.asarray(cold)}, carry=carry,
              shape=f"{tree.size}-node tree, depth {tree.max_depth}")


def check_draft_room(plan: Plan, target_max_len: int, max_new_tokens: int) -> tuple[str, int, int]:
  """(which model bounds the context, its max_len, the longest prompt): the caches hold the
  prompt, the new tokens and one tree; raises when not even a 1-token prompt fits."""
  limit, max_len = "target", target_max_len
  if plan.max_len is not None and plan.max_len < max_len:
    limit, max_len = "draft", plan.max_len
  tree = plan.largest_tree
  room = max_len - max_new_tokens - tree.size
  if room < 1:
    raise UserError(f"a tree deeper than the cache can hold: the proposer's tree ({tree.size} "
                    f"nodes, depth {tree.max_depth}) + max_new_tokens {max_new_tokens} + a "
                    f"prompt > the {limit}'s max_len {max_len}")
  return limit, max_len, room

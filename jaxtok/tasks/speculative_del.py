"""The ``early_exit`` proposer of the ``speculative`` task: DEL self-speculation.

Exit L drafts with the target's own first L blocks, an exit norm and the tied head
(``jaxtok/decoding/early_exit.py``). Before the first batch the exit norms at
``proposer.exit_layers`` are trained by KL to the frozen target on windows of train-split
standard-library source (``exit_windows`` x ``exit_window_len`` tokens, ``exit_steps`` Adam steps;
or ``exit_data``, a local token set such as the target's own greedy continuations;
the scales are cached under ``$JAXTOK_CACHE_DIR/del_exits`` for a pretrained target), and each
exit's top-1 agreement with the target on test-split windows becomes DEL's prior rate.

``proposer.adapter`` puts a trained block between each exit and the head (Kangaroo's adapter,
``jaxtok/decoding/exit_adapter.py``; ``adapter_init`` picks the block it starts as, ``adapter_lr``
its learning rate, the windows and steps are the exit norms'): a draft step then costs L + 1
blocks, which DEL's cost model counts. ``proposer.trim_size`` > 0 gives every exit VocabTrim's
head (the ``trim_size`` ids the target generates most often on train-split prompts).

``proposer.exit_layer`` > 0 drafts from that exit with ``length`` tokens a round (LayerSkip's
static choice). ``exit_layer`` 0 is DEL: per batch of prompts, shadow tokens on the prompts
(one target pass up to the deepest exit) update the prior rates, and ``select_exit`` picks the
(L, gamma) over ``exit_layers`` x ``gammas`` with the most expected tokens per layer-pass. Either
way drafting stops in a round once every row's top-1 probability is below ``threshold``.

``proposer.cost = 'measured'`` replaces layer passes by seconds timed on this machine at the first
choice for each batch size (a draft step from each exit, a verify pass per draft length, a plain
step; ``cost_context`` cached tokens), and a 0 in ``gammas`` lets DEL decode without drafts
(``NoDraft``) when no exit is predicted to beat plain decoding. ``shadow_tokens`` = W > 0 runs
the shadow pass over the prompts' last W tokens only (they see no earlier context): its cost is
then W tokens of target and exit heads, not a second prefill of the whole prompt.

``proposer.per_round`` (with ``exit_layer`` 0, exit norms, the full head) is DEL as the paper
runs it: ``jaxtok/decoding/self_spec.py``'s ``DynamicExit`` drafts from the target's own KV
cache (LayerSkip's one cache) and re-chooses (L, gamma) every round from shadow tokens at the
nodes each verify pass accepted, starting from the exits' held-out rates; no shadow pass over the
prompt. ``cost`` prices the rounds as above; ``threshold`` and ``verify`` do not apply.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.data.python_source import corpus_files, split_of
from jaxtok.data.sources import get_spec, open_split
from jaxtok.decoding import early_exit as ee
from jaxtok.decoding import exit_adapter as xa
from jaxtok.decoding.proposers import LMStep, NoDraft
from jaxtok.decoding.self_spec import DynamicExit
from jaxtok.decoding.vocab_trim import TrimmedLMStep, kept_ids, trim_params
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Plan, Target
from jaxtok.tasks.vocab_trim_counts import target_counts

COSTS = ("layers", "measured")  # DEL's layer passes; seconds timed on this machine


def source_windows(encode, split: str, num: int, length: int) -> np.ndarray:
  """int [num, length]: consecutive tokens of ``split``-split standard-library files."""
  root = sysconfig.get_paths()["stdlib"]
  ids: list[int] = []
  for path in corpus_files(root):
    if split_of(path, root) == split:
      with open(path, encoding="utf-8", errors="replace") as f:
        ids += encode(f.read()[:4000])
      if len(ids) >= num * length:
        return np.asarray(ids[:num * length], np.int32).reshape(num, length)
  raise ValueError(f"the {split} split has {len(ids)} tokens, fewer than {num} x {length}")


def exit_windows(p, encode, split: str, num: int, length: int) -> np.ndarray:
  """int [num, length]: the exits' training (``split`` 'train') or held-out windows: stdlib
  source (``source_windows``), or with ``proposer.exit_data`` the first ``num`` examples of that
  local token set, e.g. ``python_source_smollm2_greedy`` (stdlib prefixes continued by the
  target's own greedy decoding: the text a drafter meets at decode time), built with
  ``exit_data_sizes`` (train, test) examples of ``length`` + 1 tokens."""
  name = p.get("exit_data", "")
  if not name:
    return source_windows(encode, split, num, length)
  sizes = tuple(int(x) for x in p.exit_data_sizes)
  src = open_split(get_spec(name), split, data_dir=None, image_size=length + 1,
                   builder_overrides={"num_train": sizes[0], "num_test": sizes[1]})
  if len(src) < num:
    raise ValueError(f"proposer.exit_data {name!r} has {len(src)} {split} windows, fewer than "
                     f"the {num} asked for: raise exit_data_sizes {sizes}")
  return np.stack([np.asarray(src[i]["tokens"][:length]) for i in range(num)]).astype(np.int32)


def exit_cache_file(name: str, layers, p, adapted: bool) -> str:
  """Where the exits trained for pretrained target ``name`` are cached: every setting that
  changes them (layers, windows, steps, adapter settings, training data) is in the name."""
  root = os.environ.get("JAXTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "jaxtok")
  tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
  key = (f"{tag}_L{'-'.join(map(str, layers))}_{int(p.exit_windows)}x{int(p.exit_window_len)}"
         f"_s{int(p.exit_steps)}" + (f"_adapter-{p.adapter_init}-{float(p.adapter_lr):g}"
                                     if adapted else "") +
         (f"_{p.exit_data}" if p.get("exit_data", "") else "") +
         f"_py{sys.version_info.major}{sys.version_info.minor}.npz")
  return os.path.join(root, "del_exits", key)


def _check(p, num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
  layers = tuple(int(x) for x in p.exit_layers)
  gammas = tuple(int(x) for x in p.gammas)
  layer = int(p.exit_layer)
  if not layers or min(layers) < 1 or max(layers) >= num_layers or len(set(layers)) < len(layers):
    raise ValueError(f"proposer.exit_layers must be distinct layers in 1..{num_layers - 1} (an "
                     f"exit at the last layer is the target itself), got {layers}")
  if not gammas or min(gammas) < 0 or max(gammas) < 1:
    raise ValueError(f"proposer.gammas must be draft lengths >= 0 (0: no drafting), at least one "
                     f">= 1, got {gammas}")
  if p.get("cost", "layers") not in COSTS:
    raise ValueError(f"proposer.cost must be one of {COSTS}, got {p.cost!r}")
  if int(p.get("shadow_tokens", 0)) < 0:
    raise ValueError(f"proposer.shadow_tokens must be >= 0 (0: the whole prompt), got "
                     f"{p.shadow_tokens}")
  if int(p.get("cost_context", 1)) < 1:
    raise ValueError(f"proposer.cost_context must be >= 1, got {p.cost_context}")
  if layer and layer not in layers:
    raise ValueError(f"proposer.exit_layer {layer} is not one of exit_layers {layers} (whose "
                     "norms are trained); 0 picks the exit per batch (DEL)")
  if not 0.0 <= float(p.threshold) < 1.0:
    raise ValueError(f"proposer.threshold must be in [0, 1), got {p.threshold}")
  if p.get("verify", "all") not in ("all", "confident"):
    raise ValueError(f"proposer.verify must be 'all' or 'confident', got {p.verify!r}")
  if min(int(p.exit_steps), int(p.exit_windows), int(p.exit_window_len)) < 1:
    raise ValueError("proposer.exit_steps, exit_windows and exit_window_len must be >= 1")
  if int(p.get("trim_size", 0)) < 0:
    raise ValueError(f"proposer.trim_size must be >= 0 (0: the full head), got {p.trim_size}")
  if p.get("per_round", False) and (layer or p.get("adapter", False) or p.get("trim_size", 0)):
    raise ValueError("proposer.per_round drafts from the target's own cache with exit norms: "
                     "it needs exit_layer 0, no adapter (its block is not in the target's "
                     "cache) and the full head (trim_size 0)")
  if p.get("per_round", False) and p.get("verify", "all") != "all":
    raise ValueError("proposer.per_round picks each round's draft length itself and verifies "
                     "all of it; verify='confident' is ConfidentDraft's (leave per_round off)")
  if p.get("adapter", False):
    if p.adapter_init not in xa.INIT_FROM:
      raise ValueError(f"proposer.adapter_init must be one of {xa.INIT_FROM}, got "
                       f"{p.adapter_init!r}")
    if not float(p.adapter_lr) > 0:
      raise ValueError(f"proposer.adapter_lr must be > 0, got {p.adapter_lr}")
  return layers, gammas, layer


def exit_draft(model, target_params, fit, layers: tuple[int, ...], layer: int, gamma: int,
               threshold: float = 0.0, adapted: bool = False, verify: str = "all"):
  """(proposer, its params) drafting ``gamma`` tokens from exit ``layer`` of ``fit`` (the
  prepared exits: norms, or adapters when ``adapted``; with ``fit['kept']``, a trimmed head);
  ``verify``: ``ConfidentDraft.verify``."""
  k, trimmed = layers.index(layer), "kept" in fit
  proposer = exit_proposer(model, layer, gamma, threshold, adapted, trimmed, verify)
  if adapted:
    params = xa.adapter_params(target_params, layer, xa.unpack(fit, f"adapter{k}"))
  else:
    params = ee.exit_params(target_params, layer, fit["scales"][k])
  return proposer, trim_params(params, fit["kept"]) if trimmed else params


def exit_proposer(model, layer: int, gamma: int, threshold: float, adapted: bool,
                  trimmed: bool, verify: str = "all") -> ee.ConfidentDraft:
  """The drafter of exit ``layer`` (an adapter's block on top when ``adapted``; VocabTrim's
  head, a [k, d] matmul over the kept ids only, when ``trimmed``)."""
  draft = (xa.adapter_model if adapted else ee.exit_model)(model, layer)
  return ee.ConfidentDraft(TrimmedLMStep(draft) if trimmed else LMStep(draft), length=gamma,
                           threshold=threshold, verify=verify)


@PROPOSER_BUILDERS.register("early_exit")
def build_early_exit(config, target: Target) -> Plan:
  p, model = config.proposer, target.model
  layers, gammas, layer = _check(p, model.num_layers)
  threshold, adapted = float(p.threshold), bool(p.get("adapter", False))
  shadow_tokens, verify = int(p.get("shadow_tokens", 0)), p.get("verify", "all")

  trim = int(p.get("trim_size", 0))

  def proposer(lay: int, gamma: int):
    return exit_proposer(model, lay, gamma, threshold, adapted, bool(trim), verify)

  fitted: dict = {}

  def prepare(params):
    if not fitted:
      path = target.pretrained and exit_cache_file(target.pretrained, layers, p, adapted)
      if path and paths.exists(path):
        with paths.path(path).open("rb") as f:
          fitted.update(np.load(f))
      else:
        n, length = int(p.exit_windows), int(p.exit_window_len)
        encode = target.tokenizer.encode
        train = exit_windows(p, encode, "train", n, length)
        held_out = exit_windows(p, encode, "test", max(n // 4, 1), length)
        if adapted:
          fitted.update(xa.fit_exit_adapters(
              model, params["target"], layers, train, held_out, steps=int(p.exit_steps),
              learning_rate=float(p.adapter_lr), init_from=p.adapter_init,
              log_every=max(int(p.exit_steps) // 4, 1)))
        else:
          fitted.update(ee.fit_exit_norms(model, params["target"], layers, train, held_out,
                                          steps=int(p.exit_steps)))
        if path:
          paths.makedirs(paths.path(path).parent)
          with paths.path(path).open("wb") as f:
            np.savez(f, **fitted)
      kl = (["" for _ in layers] if "kl_after" not in fitted else
            [f", KL {b:.2f} -> {a:.2f}" for b, a in zip(fitted["kl_before"], fitted["kl_after"])])
      print("DEL exits " + ("(adapters) " if adapted else "") + ", ".join(
          f"L={lay}: top-1 agreement {b:.3f} -> {a:.3f}{d}" for lay, b, a, d in zip(
              layers, fitted["agree_before"], fitted["agree_after"], kl)) +
            " (test-split windows)")
      if trim:  # after caching: the kept ids are not part of the trained exits
        fitted["kept"] = kept_ids(target_counts(
            model, params["target"], target.tokenizer.encode, target.stops,
            vocab_size=target.arch.vocab_size, num_prompts=int(p.count_prompts),
            new_tokens=int(p.count_new_tokens), max_prompt_tokens=int(p.count_prompt_tokens),
            cache_name=target.pretrained), trim, target.stops)
    if layer:
      return exit_draft(model, params["target"], fitted, layers, layer, 1, adapted=adapted)[1]
    if p.get("cost", "layers") == "measured":
      fitted.setdefault("costs", {})  # per batch size, timed by the first choice at that size
    return fitted

  sure = ", verifying the sure drafts only" if verify == "confident" else ""
  if layer:
    return Plan(proposer(layer, int(p.length)), prepare=prepare,
                shape=f"exit L={layer} of {model.num_layers}{' + adapter' * adapted}, "
                      f"{int(p.length)} tokens, stop below {threshold}{sure}"
                      + (f", head of {trim} ids" if trim else ""))

  if p.get("per_round", False):
    return _per_round_plan(model, p, layers, gammas, prepare)
  if adapted:
    shadow = jax.jit(lambda prm, ad, pr, m: xa.adapter_shadow(model, prm, ad, layers, pr, m))
  else:
    shadow = jax.jit(lambda prm, sc, pr, m: ee.prompt_shadow(model, prm, sc, layers, pr, m,
                                                             model.norm_eps))

  def choose(params, fit, tokens, mask):
    exits = (tuple(xa.unpack(fit, f"adapter{k}") for k in range(len(layers))) if adapted
             else jnp.asarray(fit["scales"]))
    if shadow_tokens:  # a pass over the prompts' last W columns, not a prompt-long one
      tokens, mask = tokens[:, -shadow_tokens:], mask[:, -shadow_tokens:]
    matches, total = jax.device_get(shadow(params["target"], exits, tokens, mask))
    rates = ee.acceptance_rates(matches, total, fit["agree_after"])
    costs = fit.get("costs")
    if costs is not None:  # measured: time this batch size once (the task's untimed first call)
      b = int(tokens.shape[0])
      if b not in costs:
        costs[b] = measure_costs(model, params["target"], fit, layers, gammas, adapted,
                                 int(p.cost_context), b)
      costs = costs[b]
    lay, gamma, _ = ee.select_exit(rates, layers, gammas, model.num_layers, int(adapted), costs)
    print(f"DEL: shadow rates {dict(zip(layers, np.round(rates, 3).tolist()))} -> " + (
        f"L={lay}, gamma={gamma}" if gamma else "no drafting (gamma=0: plain target steps)"))
    if not gamma:
      return NoDraft(), None
    return exit_draft(model, params["target"], fit, layers, lay, gamma, threshold, adapted,
                      verify)

  candidates = tuple(proposer(lay, g) for lay in layers for g in gammas if g)
  candidates += (NoDraft(),) if 0 in gammas else ()
  return Plan(candidates[0], prepare=prepare, choose=choose, candidates=candidates,
              shape=f"DEL over exits {layers} x lengths {gammas}, stop below {threshold}{sure}")


def _per_round_plan(model, p, layers, gammas, prepare) -> Plan:
  """DEL re-choosing every round on the target's own cache (``self_spec.DynamicExit``)."""
  def choose(params, fit, tokens, mask):
    del mask
    prior = tuple(float(a) for a in fit["agree_after"])
    costs = fit.get("costs")
    if costs is None:
      prop = DynamicExit(model, layers, gammas, prior=prior)
    else:  # measured: this batch size's once (the task's untimed first call)
      b = int(tokens.shape[0])
      if b not in costs:
        costs[b] = measure_costs(model, params["target"], fit, layers, gammas, False,
                                 int(p.cost_context), b)
      prop = DynamicExit.with_costs(model, layers, gammas, costs[b], prior=prior)
    return prop, {"target": params["target"], "scales": jnp.asarray(fit["scales"])}

  first = DynamicExit(model, layers, gammas)
  names = [f"L={layers[k]}, G={g}" if g else "no drafts" for k, g in first.options]

  def carry(fit, stats):  # not carried: printed, the rounds each (L, gamma) took in the batch
    st = stats["proposer_state"]
    rounds = ", ".join(f"{n} {int(r)}" for n, r in zip(names, st["rounds"]) if r)
    print(f"DEL every round: rounds by choice {rounds}; decayed shadow matches "
          f"{dict(zip(layers, np.round(np.asarray(st['hits']), 2).tolist()))} of "
          f"{float(st['seen']):.2f} positions")
    return fit

  return Plan(first, prepare=prepare, choose=choose, carry=carry, candidates=(first,),
              shape=f"DEL every round over exits {layers} x lengths {gammas}, one KV cache "
                    f"(options: {first.options})")


def measure_costs(model, target_params, fit, layers: tuple[int, ...], gammas: tuple[int, ...],
                  adapted: bool, context: int, batch: int = 1) -> ee.StepCosts:
  """DEL's costs in seconds on this machine for ``batch`` rows after ``context`` cached tokens:
  one draft step from each prepared exit (its head trimmed if ``fit`` has kept ids), a target
  pass over gamma + 1 tokens for each draft length, a plain one-token target step. Printed."""
  target = LMStep(model)
  time_target = lambda n: ee.step_seconds(target, target_params, model, n, context, batch=batch)
  verify = {g: time_target(g + 1) for g in gammas if g}
  draft = {}
  for lay in layers:
    prop, prm = exit_draft(model, target_params, fit, layers, lay, 1, adapted=adapted)
    draft[lay] = ee.step_seconds(prop.step, prm, prop.step.model, 1, context, batch=batch)
  costs = ee.StepCosts(draft, verify, time_target(1))
  ms = lambda d, k: ", ".join(f"{k}={key} {1e3 * v:.2f}" for key, v in d.items())
  print(f"DEL step costs (ms, batch {batch}, measured after {context} cached tokens): plain step "
        f"{1e3 * costs.plain:.2f}; verify {ms(verify, 'gamma')}; draft step {ms(draft, 'L')}")
  return costs

"""The ``early_exit`` proposer of the ``speculative`` task: DEL self-speculation.

Exit L drafts with the target's own first L blocks, an exit norm and the tied head
(``jaxtok/decoding/early_exit.py``). Before the first batch the exit norms at
``proposer.exit_layers`` are trained by KL to the frozen target on windows of train-split
standard-library source (``exit_windows`` x ``exit_window_len`` tokens, ``exit_steps`` Adam steps;
the scales are cached under ``$JAXTOK_CACHE_DIR/del_exits`` for a pretrained target), and each
exit's top-1 agreement with the target on test-split windows becomes DEL's prior rate.

``proposer.exit_layer`` > 0 drafts from that exit with ``length`` tokens a round (LayerSkip's
static choice). ``exit_layer`` 0 is DEL: per batch of prompts, shadow tokens on the prompts
(one target pass up to the deepest exit) update the prior rates, and ``select_exit`` picks the
(L, gamma) over ``exit_layers`` x ``gammas`` with the most expected tokens per layer-pass. Either
way drafting stops in a round once every row's top-1 probability is below ``threshold``.
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
from jaxtok.decoding import early_exit as ee
from jaxtok.decoding.proposers import LMStep
from jaxtok.tasks.speculative_proposers import PROPOSER_BUILDERS, Plan, Target


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


def _cache_file(name: str, layers, p) -> str:
  root = os.environ.get("JAXTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "jaxtok")
  tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
  key = (f"{tag}_L{'-'.join(map(str, layers))}_{int(p.exit_windows)}x{int(p.exit_window_len)}"
         f"_s{int(p.exit_steps)}_py{sys.version_info.major}{sys.version_info.minor}.npz")
  return os.path.join(root, "del_exits", key)


def _check(p, num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
  layers = tuple(int(x) for x in p.exit_layers)
  gammas = tuple(int(x) for x in p.gammas)
  layer = int(p.exit_layer)
  if not layers or min(layers) < 1 or max(layers) >= num_layers or len(set(layers)) < len(layers):
    raise ValueError(f"proposer.exit_layers must be distinct layers in 1..{num_layers - 1} (an "
                     f"exit at the last layer is the target itself), got {layers}")
  if not gammas or min(gammas) < 1:
    raise ValueError(f"proposer.gammas must be draft lengths >= 1, got {gammas}")
  if layer and layer not in layers:
    raise ValueError(f"proposer.exit_layer {layer} is not one of exit_layers {layers} (whose "
                     "norms are trained); 0 picks the exit per batch (DEL)")
  if not 0.0 <= float(p.threshold) < 1.0:
    raise ValueError(f"proposer.threshold must be in [0, 1), got {p.threshold}")
  if min(int(p.exit_steps), int(p.exit_windows), int(p.exit_window_len)) < 1:
    raise ValueError("proposer.exit_steps, exit_windows and exit_window_len must be >= 1")
  return layers, gammas, layer


@PROPOSER_BUILDERS.register("early_exit")
def build_early_exit(config, target: Target) -> Plan:
  p, model = config.proposer, target.model
  layers, gammas, layer = _check(p, model.num_layers)
  threshold = float(p.threshold)

  def proposer(lay: int, gamma: int):
    return ee.ConfidentDraft(LMStep(ee.exit_model(model, lay)), length=gamma,
                             threshold=threshold)

  fitted: dict = {}

  def prepare(params):
    if not fitted:
      path = target.pretrained and _cache_file(target.pretrained, layers, p)
      if path and paths.exists(path):
        with paths.path(path).open("rb") as f:
          fitted.update(np.load(f))
      else:
        n, length = int(p.exit_windows), int(p.exit_window_len)
        encode = target.tokenizer.encode
        fitted.update(ee.fit_exit_norms(
            model, params["target"], layers, source_windows(encode, "train", n, length),
            source_windows(encode, "test", max(n // 4, 1), length),
            steps=int(p.exit_steps)))
        if path:
          paths.makedirs(paths.path(path).parent)
          with paths.path(path).open("wb") as f:
            np.savez(f, **fitted)
      print("DEL exits " + ", ".join(
          f"L={lay}: top-1 agreement {b:.3f} -> {a:.3f}" for lay, b, a in zip(
              layers, fitted["agree_before"], fitted["agree_after"])) + " (test-split windows)")
    if layer:
      return ee.exit_params(params["target"], layer, fitted["scales"][layers.index(layer)])
    return fitted

  if layer:
    return Plan(proposer(layer, int(p.length)), prepare=prepare,
                shape=f"exit L={layer} of {model.num_layers}, {int(p.length)} tokens, "
                      f"stop below {threshold}")

  shadow = jax.jit(lambda prm, sc, pr, m: ee.prompt_shadow(model, prm, sc, layers, pr, m,
                                                           model.norm_eps))

  def choose(params, fit, tokens, mask):
    matches, total = jax.device_get(shadow(params["target"], jnp.asarray(fit["scales"]), tokens,
                                           mask))
    rates = ee.acceptance_rates(matches, total, fit["agree_after"])
    lay, gamma, _ = ee.select_exit(rates, layers, gammas, model.num_layers)
    print(f"DEL: shadow rates {dict(zip(layers, np.round(rates, 3).tolist()))} -> L={lay}, "
          f"gamma={gamma}")
    return proposer(lay, gamma), ee.exit_params(params["target"], lay,
                                                fit["scales"][layers.index(lay)])

  candidates = tuple(proposer(lay, g) for lay in layers for g in gammas)
  return Plan(candidates[0], prepare=prepare, choose=choose, candidates=candidates,
              shape=f"DEL over exits {layers} x lengths {gammas}, stop below {threshold}")

"""One registry of samplers: name -> function, what it needs, and a typed options dataclass.

A task names its samplers as specs, ``'name'`` or ``'name:key=value,...'`` (values are Python
literals: ``maskgit:num_steps=8,temperature=0.0``, ``fhs:precision='float64'``), and checks them
with :func:`parse` when it is built, so a typo fails before anything compiles, listing the valid
names or options.

Each entry's options dataclass is derived from the function's keyword-only parameters (their
annotations and defaults), so the function stays the one place a default is written. ``inputs``
says which model hooks a sampler needs:

* ``"logits"``: ``fn(rng, logits_fn, init, *, mask_id, **options)``;
* ``"critic"``: ``fn(rng, logits_fn, critic_fn, init, ...)`` (Token-Critic);
* ``"recap"``: ``fn(rng, full_fn, partial_fn, init, ...)`` (ReCAP's cached partial passes);
* ``"lm"``: ``generate(rng, step_fn, params, cache, prompt, prompt_mask, ...)`` (autoregressive,
  with a KV cache).

:func:`run` calls a masked-model sampler (the first three kinds) from a spec and the hooks.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxtok.generators.layout_corrector import layout_corrector_sample
from jaxtok.generators.samplers.autoregressive import generate
from jaxtok.generators.samplers.block_cache import CACHES, RULES, block_cache_sample
from jaxtok.generators.samplers.categorical import PRECISIONS
from jaxtok.generators.samplers.confidence import CONFIDENCES
from jaxtok.generators.samplers.deferred import deferred_commitment_sample
from jaxtok.generators.samplers.first_hitting import first_hitting_sample
from jaxtok.generators.samplers.maskgit import maskgit_sample
from jaxtok.generators.samplers.mdlm import ddpm_sample
from jaxtok.generators.samplers.recap import recap_sample
from jaxtok.generators.samplers.schedules import ALPHAS, SCHEDULES
from jaxtok.generators.samplers.threshold import threshold_sample
from jaxtok.generators.samplers.token_critic import token_critic_sample

INPUTS = ("logits", "critic", "recap", "lm")
# Parameters the caller provides (hooks, shapes, ids), never options of a spec.
_CALLER_ARGS = {"mask_id", "max_new_tokens", "pad_id"}
# Options whose values come from a fixed set, checked by parse (not only when the sampler traces);
# keyed by option name, or by (sampler, option) where one name means different things.
CHOICES = {"precision": PRECISIONS, "schedule": tuple(SCHEDULES), "alpha": tuple(ALPHAS),
           "confidence_measure": tuple(CONFIDENCES), "rule": RULES,
           ("block_cache", "cache"): CACHES}  # (sampler, option): ddpm's `cache` is a bool


@dataclasses.dataclass(frozen=True)
class Sampler:
  """A registered sampler. ``fixed``: options the name pins (``ddpm_cache`` is ddpm with
  cache=True); ``options``: the dataclass of the others, with the function's defaults."""

  name: str
  fn: Callable[..., Any]
  inputs: str
  options: type
  fixed: dict[str, Any]
  doc: str


def _options_class(name: str, fn: Callable, fixed: dict[str, Any]) -> type:
  hints = typing.get_type_hints(fn)
  fields = []
  for p in inspect.signature(fn).parameters.values():
    if p.kind is not p.KEYWORD_ONLY or p.name in _CALLER_ARGS or p.name in fixed:
      continue
    default = p.default if p.default is not p.empty else dataclasses.MISSING
    fields.append((p.name, hints.get(p.name, Any), dataclasses.field(default=default)))
  return dataclasses.make_dataclass(f"{name.title().replace('_', '')}Options", fields,
                                    frozen=True)


class RecapHooks(NamedTuple):
  """ReCAP's two model hooks (any object with these two methods will do, e.g. ``RecapFns``)."""

  full: Callable[[Any], tuple[Any, Any]]  # tokens [B, N] -> (logits [B, N, V], cache)
  partial: Callable[[Any, Any, Any], Any]  # (tokens, positions [B, K], cache) -> [B, K, V]


SAMPLERS: dict[str, Sampler] = {}


def register(name: str, fn: Callable, inputs: str, doc: str, **fixed) -> Sampler:
  if name in SAMPLERS:
    raise ValueError(f"sampler {name!r} is already registered")
  if inputs not in INPUTS:
    raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
  SAMPLERS[name] = Sampler(name, fn, inputs, _options_class(name, fn, fixed), fixed, doc)
  return SAMPLERS[name]


register("maskgit", maskgit_sample, "logits", "MaskGIT confidence-scheduled parallel decoding")
register("ddpm", ddpm_sample, "logits", "MDLM / masked-diffusion ancestral sampling")
register("ddpm_cache", ddpm_sample, "logits", "ddpm, reusing logits while nothing changed",
         cache=True)
register("fhs", first_hitting_sample, "logits", "first-hitting sampler: one token per step")
register("threshold", threshold_sample, "logits", "commit every token above a confidence")
register("dcd", deferred_commitment_sample, "logits", "deferred commitment in a sliding window")
register("token_critic", token_critic_sample, "critic", "Token-Critic re-masking")
register("layout_corrector", layout_corrector_sample, "critic",
         "Layout-Corrector: a corrector re-masks low-scoring tokens at chosen steps")
register("recap", recap_sample, "recap", "ReCAP: cheap partial passes between full ones")
register("block_cache", block_cache_sample, "recap",
         "Fast-dLLM block decoding with a prefix / dual KV cache (threshold or DCD commits)")
register("ar", generate, "lm", "autoregressive decoding with a KV cache (temperature/top-k/p)")


def _type_ok(value: Any, annotation: Any) -> bool:
  if annotation is Any:
    return True
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    return any(_type_ok(value, a) for a in typing.get_args(annotation))
  if annotation is type(None):
    return value is None
  if annotation is float:  # an int literal is a fine float
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if annotation is int:
    return isinstance(value, int) and not isinstance(value, bool)
  origin = typing.get_origin(annotation)
  if origin is not None:  # Sequence[int] and the like: check the container only
    return isinstance(value, (list, tuple))
  return isinstance(value, annotation)


def parse(spec: str, *, inputs: tuple[str, ...] = INPUTS, base: dict[str, Any] | None = None
          ) -> tuple[Sampler, Any]:
  """``'name:k=v,...'`` -> (the Sampler, its options). ``base``: task-level defaults applied
  to the options the sampler has (a spec's own ``k=v`` win). Raises ValueError naming the valid
  names (of the allowed ``inputs`` kinds) or options and their types."""
  name, _, args = spec.partition(":")
  name = name.strip()
  allowed = [n for n, s in SAMPLERS.items() if s.inputs in inputs]
  if name not in allowed:
    raise ValueError(f"unknown sampler {name!r} in {spec!r}; valid here: {allowed}")
  sampler = SAMPLERS[name]
  fields = {f.name: f for f in dataclasses.fields(sampler.options)}
  kwargs = {k: v for k, v in (base or {}).items() if k in fields}
  for item in filter(None, (a.strip() for a in args.split(","))):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:
      raise ValueError(f"sampler option {item!r} in {spec!r} must be key=value")
    if key not in fields:
      raise ValueError(f"{name} has no option {key!r} (in {spec!r}); valid: "
                       + ", ".join(f"{f}: {_show(fields[f].type)}" for f in fields))
    try:
      kwargs[key] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      raise ValueError(f"option {key}={value!r} in {spec!r} is not a Python literal (quote "
                       f"strings: {key}='{value.strip()}')") from None
  for key, value in kwargs.items():
    if not _type_ok(value, fields[key].type):
      raise ValueError(f"option {key}={value!r} of {name!r} must be {_show(fields[key].type)}")
    choices = CHOICES.get((name, key), CHOICES.get(key))
    if choices is not None and value not in choices:
      raise ValueError(f"option {key}={value!r} of {name!r} must be one of {choices}")
    if fields[key].type is float and isinstance(value, int):
      kwargs[key] = float(value)
  try:
    return sampler, sampler.options(**kwargs)
  except TypeError as e:  # a required option without a default
    raise ValueError(f"{spec!r}: {e}") from None


def _show(annotation) -> str:
  return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def options_dict(options: Any) -> dict[str, Any]:
  return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def run(sampler: Sampler, options: Any, rng, init, *, mask_id: int, logits_fn=None,
        critic_fn=None, recap=None):
  """Calls a masked-model sampler with the hooks its ``inputs`` need. ``recap`` is an object with
  ``full(tokens) -> (logits, cache)`` and ``partial(tokens, positions, cache) -> logits``."""
  kw = {**options_dict(options), **sampler.fixed, "mask_id": mask_id}
  if sampler.inputs == "logits":
    return sampler.fn(rng, logits_fn, init, **kw)
  if sampler.inputs == "critic":
    if critic_fn is None:
      raise ValueError(f"sampler {sampler.name!r} needs a critic_fn")
    return sampler.fn(rng, logits_fn, critic_fn, init, **kw)
  if sampler.inputs == "recap":
    if recap is None:
      raise ValueError(f"sampler {sampler.name!r} needs the model's ReCAP hooks (full/partial)")
    return sampler.fn(rng, recap.full, recap.partial, init, **kw)
  raise ValueError(f"sampler {sampler.name!r} decodes autoregressively: call its fn with a "
                   "step function and a KV cache")

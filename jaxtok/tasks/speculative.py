"""The ``speculative`` task: lossless speculative decoding of a target LM, timed against plain
decoding of the same target in the same run. No training (``num_steps`` 0, no data).

``--mode=sample`` decodes ``config.prompt`` (ChatML for instruct targets) both ways and prints the
text, tokens/s, the speed-up, the mean acceptance length (1 + accepted / rounds, vLLM's), the
acceptance rate (accepted / drafted) and the per-position acceptance (the fraction of rounds whose
accepted path reached depth d). Greedy runs say whether the output is token-identical to plain
greedy and, where not, give the first differing new token and the target's top-2 logit gap there
(one extra forward pass): a T-token verify pass and a 1-token step differ only by float rounding,
so a flip at a tiny gap is expected and anything else is a bug. ``--mode=eval`` runs the offline
prompt set (batches of ``eval_batch_size``, left-padded to a multiple of ``eval_pad_multiple`` so
prompts share programs) and writes ``decoding_results.json``, ``decoding_table.md`` and
``acceptance_per_position.png``; with ``eval_serve`` the prompts are one queue through
``eval_batch_size`` slots, a finished row taking the next prompt (``decoding/serving.py``), against
plain decoding in static batches. Times exclude compilation: each program runs once untimed first.
Config keys: ``configs.common.speculative_base_config`` (used by ``configs/decoding/*.py``).
Proposers come from ``tasks/speculative_proposers.py``'s registry; the ``speculative_*`` modules
imported below register theirs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtok import paths
from jaxtok.decoding.engine import VERIFIERS, cache_slots_needed, speculative_generate
from jaxtok.decoding.proposers import LMStep
from jaxtok.decoding.serving import speculative_serve
from jaxtok.generators.causal_lm import DTYPES, CausalLM, init_cache
from jaxtok.generators.samplers.autoregressive import ModelStep, generate
from jaxtok.nn import bf16
from jaxtok.nn import rows as rows_lib
from jaxtok.pretrained.chat import chatml
from jaxtok.tasks import (  # noqa: F401
  speculative_del,
  speculative_dovetail,
  speculative_fused,
  speculative_jackpot,
  speculative_sorted,
)
from jaxtok.tasks import speculative_report as report
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.prompt_set import prompt_set
from jaxtok.tasks.speculative_proposers import (
  PROPOSER_BUILDERS,
  Plan,
  Target,
  check_draft_room,
  load_lm,
)
from jaxtok.train.state import TrainState
from jaxtok.train.validate import UserError, check_choice

# Top-2 logit gaps up to which a greedy mismatch is float rounding (verify pass vs 1-token step);
# bf16 weights round activations to bf16 at every product, as a bf16 model does
# (scripts/studies/verify_rounding.py measures the size).
ROUNDING_GAP = {"float32": 1e-3, "bfloat16": 0.5}
# Proposers that reach the target only through its step function, so its layout may change.
ROWS_PROPOSERS = ("ngram", "recycling", "draft")  # draft: its own weights features-first too


def _params(model, rng, host, scale):
  """Boxed params: ``host`` (numpy, through a callback as in tasks/lm.py) or random * ``scale``."""
  tokens = jnp.zeros((1, 8), jnp.int32)
  if host is None:
    boxed = model.init(rng, tokens)["params"]
    return jax.tree.map(lambda x: x * scale, boxed) if scale != 1.0 else boxed
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))["params"]
  flat, treedef = jax.tree.flatten(host)
  shapes = [jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in flat]
  values = jax.tree.unflatten(treedef, jax.pure_callback(
      lambda: [np.asarray(x, np.float32) for x in flat], shapes))
  return jax.tree.map(lambda box, v: box.replace_boxed(v) if isinstance(
      box, nn.LogicallyPartitioned) else v, boxed, values,
      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _check_options(config) -> None:
  check_choice("dtype", config.get("dtype", "float32"), sorted(DTYPES))
  weights = config.get("weights", "float32")
  check_choice("weights", weights, ["bfloat16", "float32", "rows"])
  if weights == "rows" and config.proposer.name not in ROWS_PROPOSERS:
    raise UserError(f"weights='rows' (the target's float32 weights stored features-first, "
                    f"jaxtok/nn/rows.py) works with the proposers {', '.join(ROWS_PROPOSERS)}; "
                    f"{config.proposer.name!r} reads the target's layers itself")
  PROPOSER_BUILDERS.get(config.proposer.name)  # an unknown name lists the valid ones
  verifier, temperature = config.verifier, float(config.temperature)
  if verifier not in VERIFIERS:
    raise ValueError(f"unknown verifier {verifier!r}; valid: {', '.join(VERIFIERS)}")
  if temperature < 0 or not 0 < config.top_p <= 1 or config.top_k < 0:
    raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, "
                     f"{config.top_p}, {config.top_k}")
  if temperature > 0 and verifier == "greedy":
    raise ValueError(f"temperature {temperature} > 0 samples, but the greedy verifier only keeps "
                     "the target's argmax: use verifier='rejection' or 'spectr' (or temperature 0)")
  if temperature == 0 and verifier != "greedy":
    raise ValueError(f"temperature 0 is greedy decoding; the {verifier!r} verifier samples: use "
                     "verifier='greedy' or a temperature > 0")
  if min(int(config.max_new_tokens), int(config.eval_batch_size)) < 1:
    raise ValueError(f"need max_new_tokens, eval_batch_size >= 1; got {config.max_new_tokens}, "
                     f"{config.eval_batch_size}")


def _check_plan(config, plan: Plan) -> None:
  name, proposers = config.proposer.name, plan.candidates or (plan.proposer,)
  if config.get("eval_serve", False) and not all(getattr(q, "refillable", False)
                                                 for q in proposers):
    raise UserError(f"eval_serve (continuous batching) needs a proposer that keeps nothing per "
                    f"prompt: ngram, recycling; {name!r} keeps per-row state (a draft's cache) "
                    "or picks its proposer per batch")
  if config.verifier == "spectr" and min(getattr(q, "num_drafts", 1) for q in proposers) < 2:
    raise ValueError(f"the spectr verifier needs a proposer with num_drafts >= 2 (a draft model, "
                     f"proposer.name='draft' or 'vocabtrim'); proposer {name!r} drafts one chain: "
                     "use 'rejection'")
  if config.verifier == "rejection" and not all(q.template.is_chain for q in proposers):
    tree = plan.largest_tree
    raise ValueError(f"the rejection verifier checks one chain of drafts, but proposer "
                     f"{name!r} makes a tree of {tree.size} nodes: use verifier='greedy'")


def build(config) -> Task:
  """Builds the ``speculative`` Task; every bad option fails here, before anything compiles."""
  p, dtype = config.proposer, config.get("dtype", "float32")
  _check_options(config)
  t = config.target
  arch, t_host, tokenizer, chat, stops, t_name = load_lm(t.get("pretrained"), t.variant, "target")
  chat = chat or bool(t.get("chat", False))
  if tokenizer.vocab_size > arch.vocab_size:
    raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but target {t_name!r} has "
                     f"vocab_size {arch.vocab_size}")
  model = CausalLM.from_config(arch, dtype=dtype)
  plan = PROPOSER_BUILDERS.get(p.name)(config, Target(
      arch, model, t_name, t.get("pretrained"), tokenizer, stops, dtype))
  _check_plan(config, plan)
  tree, n = plan.largest_tree, int(config.max_new_tokens)
  # The KV caches (the target's, and a draft model's of the same length) hold the prompt, the N
  # new tokens and one tree: the shorter context of the two bounds the prompt.
  limit, max_len, room = check_draft_room(plan, arch.max_len, n)

  def encode(text: str, what: str, as_chat: bool = True) -> list[int]:
    ids = tokenizer.encode(chatml(text) if chat and as_chat else text)
    if not 1 <= len(ids) <= room:
      raise UserError(f"{what} has {len(ids)} tokens, longer than the {limit}'s max_len "
                      f"{max_len} minus max_new_tokens {n} minus the tree size {tree.size} "
                      f"(= {room})" if ids else f"{what} is empty: decoding needs a prompt token")
    return ids

  sample_ids = encode(config.prompt, "config.prompt: the prompt")
  greedy = config.verifier == "greedy"
  temperature = float(config.temperature) if not greedy else 1.0
  options = dict(temperature=temperature, top_k=int(config.top_k), top_p=float(config.top_p))
  scale = float(config.get("random_scale", 1.0))
  tx = optax.identity()  # one object: the loop compares the state's static fields

  def init(rng: jax.Array, example_batch: Any = None) -> TrainState:
    del example_batch
    params = {"target": _params(model, rng, t_host, scale)}
    if plan.draft is not None:
      d_rng = jax.random.PRNGKey(int(config.draft.get("seed", 1)))
      params["draft"] = _params(plan.draft, d_rng, plan.draft_host, scale)
    return TrainState.create(params=params, tx=tx, rng=rng)

  def train_step(state, batch):
    raise ValueError("the speculative task does not train; use --mode=sample or --mode=eval")

  def compare(params, prompt_ids, spec_new, plain_new) -> dict[str, Any]:
    """Greedy: identical?, else the first differing new token and the target's top-2 gap."""
    if not greedy:
      return {"identical": None}
    i = next((j for j, (a, b) in enumerate(zip(spec_new, plain_new)) if a != b),
             None if len(spec_new) == len(plain_new) else min(len(spec_new), len(plain_new)))
    if i is None:
      return {"identical": True}
    context = jnp.asarray([list(prompt_ids) + list(plain_new[:i])], jnp.int32)
    with rows_lib.float_weights():  # bf16 or features-first weights: the decoders' products
      top = jax.lax.top_k(model.apply({"params": params["target"]}, context)[0, -1], 2)[0]
    gap = float(top[0] - top[1])
    return {"identical": False, "first_difference": i, "top2_gap": gap,
            "rounding": gap <= ROUNDING_GAP.get(
                "bfloat16" if config.get("weights") == "bfloat16" else dtype, 1e-3)}

  def describe() -> str:
    how = "" if greedy else f", sampled at temperature {temperature}"
    return (f"proposer {p.name} ({plan.shape}), verifier {config.verifier}{how}, "
            f"{config.get('weights', 'float32')} weights")

  seen = set()  # the (rows, width, proposer) programs that ran once (compiled)

  def _served(params, tokens, mask, proposer, prop_params, slots, rng):
    """(plain, spec) for a queue: plain decoding in static batches of ``slots`` (every row of a
    batch takes the same steps, so for plain decoding this wastes little), and speculative
    decoding through ``slots`` slots that take the next prompt as rows finish."""
    cuts = [(i, min(i + slots, tokens.shape[0])) for i in range(0, tokens.shape[0], slots)]
    caches = [init_cache(model, b - a, tokens.shape[1] + n) for a, b in cuts]
    serve_cache = init_cache(model, slots, cache_slots_needed(
        tokens.shape[1], n, proposer.template.size), per_row=True)

    def plain():
      outs = [generate(rng, ModelStep(model), params["target"], c, tokens[a:b], mask[a:b],
                       max_new_tokens=n, stop_tokens=stops, greedy=greedy, **options)
              for (a, b), c in zip(cuts, caches)]
      return jnp.concatenate([o[0] for o in outs]), {
          "forward_passes": sum(o[1]["forward_passes"] for o in outs),
          "num_generated": jnp.concatenate([o[1]["num_generated"] for o in outs])}

    def spec():
      out, stats = speculative_serve(
          rng, LMStep(model), params["target"], proposer, prop_params, tokens, mask,
          batch=slots, max_new_tokens=n, verifier=config.verifier, rho=config.get("rho"),
          stop_tokens=stops, cache=serve_cache, **options)
      return out, dict(stats, forward_passes=stats["rounds"] + stats["prefills"] + 1)
    return plain, spec


  def run(params, group, width, prop_params, served=0):
    """Both decoders on prompts left-padded to ``width``: (per-row results, new tokens under
    ``new``; the speculative stats). Times are of second calls: each program runs once first.
    A plan that chooses its proposer per batch does so here; that choice is speculative time.
    ``served`` > 0: the group is a queue, decoded plainly in static batches of ``served`` and
    speculatively with continuous batching through ``served`` slots (decoding/serving.py)."""
    tokens, mask = np.zeros((len(group), width), np.int32), np.zeros((len(group), width), bool)
    for r, row in enumerate(group):
      tokens[r, width - len(row):], mask[r, width - len(row):] = row, True
    tokens, mask, rng = jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(int(config.seed))
    choose_seconds, proposer, prepared = 0.0, plan.proposer, prop_params
    if plan.choose is not None:
      for timed in ((len(group), width, "choose") in seen, True):
        begin = time.perf_counter()
        proposer, prop_params = plan.choose(params, prepared, tokens, mask)
        choose_seconds = time.perf_counter() - begin
        if timed:
          break
      seen.add((len(group), width, "choose"))
    tree = proposer.template
    # Empty caches are built outside the timed calls: init_cache traces the model on the host.
    plain_cache = init_cache(model, len(group), width + n)
    spec_cache = init_cache(model, len(group), cache_slots_needed(width, n, tree.size),
                            per_row=True)
    plain = lambda: generate(rng, ModelStep(model), params["target"], plain_cache, tokens, mask,
                             max_new_tokens=n, stop_tokens=stops, greedy=greedy, **options)
    spec = lambda: speculative_generate(
        rng, LMStep(model), params["target"], proposer, prop_params, tokens, mask,
        max_new_tokens=n, verifier=config.verifier, rho=config.get("rho"), stop_tokens=stops,
        cache=spec_cache, **options)
    if served:
      plain, spec = _served(params, tokens, mask, proposer, prop_params, served, rng)
    out = []
    for fn, key in ((plain, "plain"), (spec, proposer)):
      if (len(group), width, key) not in seen:
        jax.block_until_ready(fn())  # compile (and run) once; the timed call reuses the program
        seen.add((len(group), width, key))
      begin = time.perf_counter()
      toks, stats = jax.block_until_ready(fn())
      out.append((time.perf_counter() - begin, np.asarray(toks), jax.device_get(stats)))
    (t_plain, o_plain, s_plain), (t_spec, o_spec, s_spec) = out
    t_spec += choose_seconds
    rows = []
    for r, row in enumerate(group):
      new = {k: [int(x) for x in o[r, width:width + int(st["num_generated"][r])]]
             for k, o, st in (("plain", o_plain, s_plain), ("spec", o_spec, s_spec))}
      acc = report.acceptance([s_spec], r)
      rows.append({"prompt_tokens": len(row), "tokens": len(new["spec"]),
                   "tokens_plain": len(new["plain"]), "seconds_plain": t_plain,
                   "seconds_spec": t_spec, "speedup": t_plain / t_spec,
                   "forward_passes_plain": int(s_plain["forward_passes"]),
                   "forward_passes_spec": int(s_spec["forward_passes"]),
                   **{k: acc[k] for k in ("mean_acceptance_length", "acceptance_rate")},
                   **compare(params, row, new["spec"], new["plain"]), "new": new})
    return rows, s_spec

  def decode_params(state: TrainState) -> dict[str, Any]:
    """The target's and draft's params as decoding reads them (``config.weights``)."""
    params, weights = nn.unbox(state.params), config.get("weights", "float32")
    if weights == "rows":  # the target's few-row verify products read each weight once
      example = jnp.zeros((1, 8), jnp.int32)
      out = {**params, "target": rows_lib.transpose(model, params["target"], example)}
      if "draft" in params and plan.draft is not None:  # its steps are 2-token, k-chain products
        out["draft"] = rows_lib.transpose(plan.draft, params["draft"], example)
      return out
    return bf16.cast(params) if weights == "bfloat16" else params

  def sample(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    params = decode_params(state)
    rows, stats = run(params, [sample_ids], len(sample_ids), plan.prepare(params))
    r, new = rows[0], rows[0].pop("new")
    completion = tokenizer.decode(new["spec"], skip_special_tokens=True)
    print(f"[user] {config.prompt}\n[assistant] {completion}" if chat
          else f"{config.prompt}{completion}")
    acc = report.acceptance([stats])
    result = {"prompt": config.prompt, "completion": completion, **r, **acc,
              "tokens_per_second_spec": r["tokens"] / r["seconds_spec"],
              "tokens_per_second_plain": r["tokens_plain"] / r["seconds_plain"]}
    for k, name in (("spec", "speculative"), ("plain", "plain")):
      print(f"{name:12s}{len(new[k])} tokens in {r['seconds_' + k]:.4f} s = "
            f"{result['tokens_per_second_' + k]:.1f} tokens/s, "
            f"{r['forward_passes_' + k]} target passes")
    print(f"speed-up {r['speedup']:.2f}x (each time is the second call of the same program, so "
          f"compile time is excluded); {describe()}\n{report.acceptance_text(acc)}\n"
          f"{report.identity_line(r, tokenizer, new)}")
    if workdir:
      paths.write_text(paths.join(workdir, "sample.txt"), completion)
      paths.write_text(paths.join(workdir, "speculative_sample.json"),
                       json.dumps(result, indent=1))
    return result

  def evaluate(state: TrainState, workdir: str | None = None) -> dict[str, Any]:
    prompts = prompt_set(config.eval_prompts, int(config.eval_num_prompts))
    ids = [encode(text, f"eval prompt {i} ({kind})", kind == "chat")
           for i, (kind, text) in enumerate(prompts)]
    params = decode_params(state)
    bsz, multiple = int(config.eval_batch_size), max(int(config.eval_pad_multiple), 1)
    prop_params, rows, spec_stats = plan.prepare(params), [], []
    serve = bool(config.get("eval_serve", False)) and len(ids) > bsz
    for start in range(0, len(ids), len(ids) if serve else bsz):  # served: one queue
      group = ids[start:] if serve else ids[start:start + bsz]
      width = min(-(-max(map(len, group)) // multiple) * multiple, room)
      batch_rows, stats = run(params, group, width, prop_params, bsz if serve else 0)
      if plan.carry is not None:  # e.g. Token Recycling's hot start, batch to batch
        prop_params = plan.carry(prop_params, stats)
      spec_stats.append(stats)
      rows += [{"index": i, "kind": prompts[i][0], "prompt": prompts[i][1][:80],
                "batch": None if serve else start // bsz,
                **{k: v for k, v in r.items() if k != "new"}}
               for i, r in enumerate(batch_rows, start)]
    acc = report.acceptance(spec_stats)
    secs = [sum(r["seconds_" + k] for r in rows[::len(rows) if serve else bsz])
            for k in ("plain", "spec")]
    same = sum(bool(r["identical"]) for r in rows)
    totals = {"prompts": len(rows), "tokens": sum(r["tokens"] for r in rows),
              "seconds_plain": secs[0], "seconds_spec": secs[1], "speedup": secs[0] / secs[1],
              "mean_acceptance_length": acc["mean_acceptance_length"],
              "acceptance_rate": acc["acceptance_rate"],
              "identical": same if greedy else None, "batch_size": bsz, "served": serve}
    shared = (f"; served through {bsz} slots (continuous batching; plain decoding in static "
              f"batches of {bsz}): every row shows the whole queue's seconds" if serve else
              f"; the {bsz} rows of a batch share its seconds" if bsz > 1 else "")
    table = report.table(rows, totals, describe(), shared)
    print(f"{table}\ntotals: {totals['tokens']} tokens, plain {secs[0]:.3f} s, speculative "
          f"{secs[1]:.3f} s, speed-up {totals['speedup']:.2f}x (times exclude compilation)"
          + (f", identical {same}/{len(rows)}" if greedy else "")
          + f"\n{report.acceptance_text(acc)}")
    if workdir:
      paths.write_text(paths.join(workdir, "decoding_table.md"), table)
      record = {"setup": describe(), "prompts": rows, "totals": totals, **acc}
      paths.write_text(paths.join(workdir, "decoding_results.json"), json.dumps(record, indent=1))
      paths.write_bytes(paths.join(workdir, "acceptance_per_position.png"),
                        report.plot(acc["per_position"], describe()))
    return {**{k: v for k, v in totals.items() if v is not None},
            "per_position": acc["per_position"]}

  return Task(init=init, train_step=train_step, sample=sample, evaluate=evaluate,
              needs_data=False)


TASKS.register("speculative", build)

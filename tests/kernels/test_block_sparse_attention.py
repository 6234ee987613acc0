"""Sparse VideoGen2 attention: k-means, permutation and top-p against hand cases, the block-sparse
paths (XLA gather, Pallas kernels in interpret mode) against dense attention with the same mask,
density 1 against dense attention, lowering for TPU / GPU, and the masked generator's hook."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.generators.masked import MaskedTransformer
from jaxtok.kernels.block_sparse_attention import (
    SparseAttention,
    SparseOptions,
    plan_mask,
    svg2_attention,
)
from jaxtok.kernels.block_sparse_attention import reference as ref
from jaxtok.nn.attention import dot_product_attention


def _qkv(b, n, h, d, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return tuple(jax.random.normal(kk, (b, n, h, d)) for kk in ks)


@functools.partial(jax.jit, static_argnames=("options", "backend"))
def _svg2(q, k, v, *, options, backend):
  return svg2_attention(q, k, v, options=options, backend=backend, interpret=True)


def test_kmeans_hand_case_and_fixed_point():
  x = jnp.array([[0.0], [1.0], [10.0], [11.0]])
  c, lab = ref.kmeans(x, 2, 3, init=jnp.array([[0.0], [1.0]]))  # 0 | 1, 10, 11 -> 0, 1 | ...
  np.testing.assert_array_equal(np.asarray(lab), [0, 0, 1, 1])
  np.testing.assert_allclose(np.asarray(c), [[0.5], [10.5]])
  # Random data run to convergence: every token in its nearest cluster (float64 numpy argmin) and
  # every centroid the mean of its members; a warm start from there moves nothing.
  xs = np.asarray(jax.random.normal(jax.random.key(1), (3, 200, 4)))
  c, lab = ref.kmeans(jnp.asarray(xs), 7, 100)
  c, lab = np.asarray(c, np.float64), np.asarray(lab)
  d2 = ((xs[:, :, None, :] - c[:, None, :, :]) ** 2).sum(-1)
  np.testing.assert_array_equal(lab, d2.argmin(-1))
  for g in range(3):
    for a in range(7):
      np.testing.assert_allclose(c[g, a], xs[g, lab[g] == a].mean(0), atol=1e-5)
  c2, lab2 = ref.kmeans(jnp.asarray(xs), 7, 5, init=jnp.asarray(c, jnp.float32))
  np.testing.assert_array_equal(np.asarray(lab2), lab)


def test_kmeans_warm_start_continues_the_iterations():
  x = jax.random.normal(jax.random.key(2), (2, 64, 3))
  c3, _ = ref.kmeans(x, 5, 3)
  c5, lab5 = ref.kmeans(x, 5, 5)
  c_warm, lab_warm = ref.kmeans(x, 5, 2, init=c3)
  np.testing.assert_allclose(np.asarray(c_warm), np.asarray(c5), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(lab_warm), np.asarray(lab5))


def test_permutation_is_a_cluster_contiguous_bijection():
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 5, (3, 50)), jnp.int32)
  labels = labels.at[:, :3].set(4)  # cluster 3 may be empty in some rows: sizes still add up
  perm, inv, sizes = ref.cluster_permutation(labels, 6)
  perm, inv, lab = np.asarray(perm), np.asarray(inv), np.asarray(labels)
  for g in range(3):
    np.testing.assert_array_equal(np.sort(perm[g]), np.arange(50))
    np.testing.assert_array_equal(perm[g][inv[g]], np.arange(50))
    run = lab[g][perm[g]]
    assert (np.diff(run) >= 0).all()  # contiguous, cluster 0 first
    for a in range(6):  # stable: original order inside a cluster
      assert (np.diff(perm[g][run == a]) > 0).all()
    np.testing.assert_array_equal(np.asarray(sizes[g]), np.bincount(lab[g], minlength=6))
  x = jax.random.normal(jax.random.key(0), (3, 50, 2))
  xp = jnp.take_along_axis(x, jnp.asarray(perm)[..., None], 1)
  np.testing.assert_array_equal(np.asarray(jnp.take_along_axis(xp, jnp.asarray(inv)[..., None],
                                                               1)), np.asarray(x))


def test_cluster_pair_probs_weight_by_key_cluster_size():
  cq = jnp.array([[1.0, 0.0]])
  ck = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
  p = np.asarray(ref.cluster_pair_probs(cq, ck, jnp.array([3, 1, 0]), scale=1.0))
  e = math.e
  np.testing.assert_allclose(p, [[3 * e / (3 * e + 1), 1 / (3 * e + 1), 0.0]], rtol=1e-6)


@pytest.mark.parametrize("top_p,min_frac,want", [
    (0.4, 0.0, [1]), (0.7, 0.0, [1, 3]), (0.75, 0.0, [1, 3]), (0.76, 0.0, [1, 2, 3]),
    (0.4, 0.75, [1, 2, 3]), (1.0, 0.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_minimal_set_reaching_p(top_p, min_frac, want):
  probs = jnp.array([[0.1, 0.5, 0.15, 0.25]])
  keep = np.asarray(ref.top_p_select(probs, top_p, min_frac))[0]
  np.testing.assert_array_equal(np.flatnonzero(keep), want)


# N = 100 is not a block multiple (padding), max_blocks = 3 of 7 blocks is a real budget.
_OPTS = SparseOptions(num_q_clusters=5, num_k_clusters=9, kmeans_iters=3, top_p=0.6,
                      min_frac=0.0, block_q=16, block_k=16, max_blocks=3)


@pytest.mark.parametrize("backend", ["xla", "gpu", "tpu"])
def test_block_sparse_equals_dense_attention_with_the_same_mask(backend):
  q, k, v = _qkv(2, 100, 2, 16, seed=3)
  got, plan = _svg2(q, k, v, options=_OPTS, backend=backend)
  mask = plan_mask(plan, 100, _OPTS, 2)
  want = ref.masked_attention(q, k, v, mask)
  assert 0.05 < float(plan.density) < 0.5  # really sparse; and the plan's density is the mask's
  np.testing.assert_allclose(float(plan.density), float(np.asarray(mask).mean()), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)
  assert float(jnp.abs(got - ref.masked_attention(q, k, v)).max()) > 0.1  # not dense


def test_block_union_covers_every_selected_cluster_pair():
  q, k, v = _qkv(1, 100, 2, 8, seed=5)
  opts = dict(num_q_clusters=6, num_k_clusters=10, top_p=0.5, min_frac=0.0, block_q=16,
              block_k=16)
  o = SparseOptions(**opts)
  _, plan = _svg2(q, k, v, options=o, backend="xla")
  mask = np.asarray(plan_mask(plan, 100, o, 1))[0]  # [H, N, N]
  qg = q.transpose(0, 2, 1, 3)[0]
  kg = k.transpose(0, 2, 1, 3)[0]
  lq = np.asarray(ref.assign(qg, plan.centroids_q))
  lk = np.asarray(ref.assign(kg, plan.centroids_k))
  sel = np.asarray(plan.selected)
  means = []
  for h in range(2):
    token_sel = sel[h][lq[h]][:, lk[h]]  # [N, N] pairs in selected cluster pairs
    assert not (token_sel & ~mask[h]).any()
    means.append(token_sel.mean())
  np.testing.assert_allclose(float(plan.cluster_density), np.mean(means), rtol=1e-6)
  assert float(plan.cluster_density) <= float(plan.density) < 1.0


@pytest.mark.parametrize("backend", ["xla", "reference", "gpu", "tpu"])
@pytest.mark.slow  # 24 s on 2 cores (tests/durations.json)
def test_density_one_is_dense_attention(backend):
  q, k, v = _qkv(2, 72, 3, 8, seed=7)
  o = SparseOptions(num_q_clusters=4, num_k_clusters=6, top_p=1.0, block_q=16, block_k=32)
  got, plan = _svg2(q, k, v, options=o, backend=backend)
  assert float(plan.density) == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref.masked_attention(q, k, v)),
                             atol=2e-6)


def test_semantic_permutation_finds_interleaved_groups():
  # Four groups interleaved in token order (token i in group i % 4); a query attends almost only
  # to keys of its own group. Contiguous blocks of the original order would each hold all four
  # groups; after the permutation one quarter of the blocks carries > 99% of the mass.
  n, d, groups = 128, 16, 4
  rng = np.random.default_rng(0)
  mu = 6.0 * np.linalg.qr(rng.normal(size=(d, d)))[0][:groups]  # orthogonal group directions
  gid = np.arange(n) % groups
  q = jnp.asarray((mu[gid] + 0.1 * rng.normal(size=(n, d)))[None, :, None], jnp.float32)
  k = jnp.asarray((mu[gid] + 0.1 * rng.normal(size=(n, d)))[None, :, None], jnp.float32)
  v = jnp.asarray(rng.normal(size=(1, n, 1, d)), jnp.float32)
  o = SparseOptions(num_q_clusters=4, num_k_clusters=4, kmeans_iters=5, top_p=0.9, min_frac=0.0,
                    block_q=16, block_k=16)
  out, plan = _svg2(q, k, v, options=o, backend="xla")
  np.testing.assert_allclose(float(plan.density), 0.25, atol=1e-6)
  mask = plan_mask(plan, n, o, 1)
  recall = float(jnp.sum(ref.attention_probs(q, k) * mask) / n)
  assert recall > 0.99
  dense = ref.masked_attention(q, k, v)
  assert float(jnp.linalg.norm(out - dense) / jnp.linalg.norm(dense)) < 0.02


@pytest.mark.parametrize("backend,platform,target", [
    ("tpu", "tpu", "tpu_custom_call"), ("gpu", "cuda", "__gpu$xla.gpu.triton")])
def test_kernels_lower_for_their_real_platform(backend, platform, target):
  o = SparseOptions(block_q=128, block_k=128, max_blocks=3)
  f = jax.jit(lambda q, k, v: svg2_attention(q, k, v, options=o, backend=backend)[0])
  x = jax.ShapeDtypeStruct((1, 1025, 2, 64), jnp.bfloat16)
  text = f.trace(x, x, x).lower(lowering_platforms=(platform,)).as_text()
  assert re.search(r"custom_call @" + re.escape(target), text)


@pytest.mark.slow  # 36 s on 2 cores (tests/durations.json)
def test_masked_generator_hook():
  model = MaskedTransformer(vocab_size=8, seq_len=96, dim=32, num_layers=1, num_heads=2,
                            mlp_dim=64, num_classes=3)
  tokens = jax.random.randint(jax.random.key(0), (2, 96), 0, 9)
  cls = jnp.array([0, 2])
  params = model.init(jax.random.key(1), tokens, cls)
  dense = model.apply(params, tokens, cls)
  full = SparseAttention(SparseOptions(num_q_clusters=3, num_k_clusters=5, top_p=1.0,
                                       block_q=16, block_k=16))
  np.testing.assert_allclose(np.asarray(model.clone(attention_impl=full).apply(params, tokens,
                                                                               cls)),
                             np.asarray(dense), atol=1e-5)
  sparse = SparseAttention(SparseOptions(num_q_clusters=3, num_k_clusters=5, top_p=0.5,
                                         min_frac=0.0, block_q=16, block_k=16, max_blocks=2))
  got = model.clone(attention_impl=sparse).apply(params, tokens, cls)
  assert np.isfinite(np.asarray(got)).all() and float(jnp.abs(got - dense).max()) > 1e-4
  assert SparseAttention(SparseOptions(top_p=0.5)) == SparseAttention(SparseOptions(top_p=0.5))


@pytest.mark.slow  # 16 s on 2 cores (tests/durations.json)
def test_errors():
  q, k, v = _qkv(1, 20, 2, 8)
  with pytest.raises(ValueError, match="top_p"):
    SparseOptions(top_p=0.0)
  with pytest.raises(ValueError, match="max_blocks"):
    SparseOptions(max_blocks=0)
  with pytest.raises(ValueError, match="backend"):
    svg2_attention(q, k, v, backend="cuda")
  with pytest.raises(ValueError, match="self-attention"):
    svg2_attention(q, k[:, :10], v[:, :10])
  with pytest.raises(ValueError, match="num_clusters <= N"):
    svg2_attention(q, k, v, options=SparseOptions(num_q_clusters=21))
  with pytest.raises(ValueError, match="unmasked"):
    dot_product_attention(q, k, v, mask=jnp.ones((1, 1, 20, 20), bool),
                          implementation=SparseAttention())
  with pytest.raises(ValueError, match="power-of-two"):
    svg2_attention(q, k, v, options=SparseOptions(num_q_clusters=4, num_k_clusters=8, block_q=24),
                   backend="gpu")

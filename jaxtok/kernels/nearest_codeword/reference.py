"""Nearest-codeword search in plain jnp, chunked so memory stays bounded.

For rows ``z`` [N, D] and a codebook ``c`` [K, D] the squared-L2 nearest code is

    k*(n) = argmin_k ||z_n - c_k||^2 = argmin_k (||c_k||^2 - 2 z_n . c_k)

(``||z_n||^2`` is the same for every k). ``'cosine'`` expects l2-normalised inputs (ops.py
normalises) and minimises ``1 - z . c``.

Memory: rows are processed in blocks of ``row_block`` (``lax.map``) and the codebook in chunks of
``code_block`` (``lax.scan``), so the largest intermediate is ``row_block x code_block`` (16 MiB
at the defaults) instead of ``N x K``.

Speed on CPU: XLA's variadic argmin reduction is ~10x slower than a plain min, so the search runs
in two stages. Stage 1 computes each distance tile with one matmul (the codebook is augmented as
``[-2c, ||c||^2]`` against ``[z, 1]`` so no elementwise pass is needed), reduces it with a plain
min over ``group`` interleaved codes (codes ``j, j + C/G, j + 2C/G, ...`` of a chunk form a group;
reducing a middle axis vectorises) and keeps a running ``(min, best group)`` per row. Stage 2
gathers the ``group`` codes of the winning group per row and takes the exact argmin of
``||z - c||^2`` among them. The answer is the nearest codeword up to float rounding of the
matmul (near-ties within ~1e-6 relative may pick either code); the returned distance is computed
directly as ``||z - c||^2`` (or ``1 - z . c``) for the returned code. Everything runs in float32.

This is the CPU path and the fallback of ``ops.nearest_codeword``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _pad_rows(x: jax.Array, rows: int, value: float = 0.0) -> jax.Array:
  pad = rows - x.shape[0]
  return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1), constant_values=value) if pad else x


def nearest_codeword_reference(
    z: jax.Array,  # [N, D]
    codebook: jax.Array,  # [K, D]
    *,
    distance: str = "l2",
    row_block: int = 2048,
    code_block: int = 2048,
    group: int = 32,
) -> tuple[jax.Array, jax.Array]:  # int32 [N], float32 [N]
  """Nearest codeword per row: (indices int32 [N], distances float32 [N]).

  ``distance='l2'`` returns squared Euclidean distances; ``'cosine'`` returns ``1 - z . c`` for
  already-normalised inputs.
  """
  if distance not in ("l2", "cosine"):
    raise ValueError(f"distance must be 'l2' or 'cosine'; got {distance!r}")
  n, d = z.shape
  k = codebook.shape[0]
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  group = max(1, min(group, _round_up(k, 8)))
  code_block = _round_up(min(code_block, _round_up(k, group)), group)  # C, a multiple of G
  row_block = max(1, min(row_block, n))
  kp = _round_up(k, code_block)
  n_chunks = kp // code_block
  sub = code_block // group  # groups per chunk

  cp = _pad_rows(codebook, kp)  # [Kp, D]
  valid = jnp.arange(kp) < k  # [Kp]
  if distance == "l2":
    bias = jnp.where(valid, jnp.sum(cp * cp, axis=-1), jnp.inf)  # [Kp] ||c||^2
    scale = -2.0
  else:
    bias = jnp.where(valid, 0.0, jnp.inf)
    scale = -1.0
  aug = jnp.concatenate([scale * cp, bias[:, None]], axis=-1)  # [Kp, D + 1]
  aug = aug.reshape(n_chunks, code_block, d + 1)  # [C#, C, D + 1]
  offsets = jnp.arange(n_chunks, dtype=jnp.int32) * sub  # [C#] first group id of each chunk

  def search_rows(zb):  # [R, D] -> ([R] int32, [R] f32)
    r = zb.shape[0]
    zaug = jnp.concatenate([zb, jnp.ones((r, 1), jnp.float32)], axis=-1)  # [R, D + 1]

    def step(carry, chunk):
      best, arg = carry  # [R], [R]
      cb, off = chunk  # [C, D + 1], []
      tile = jnp.dot(zaug, cb.T, preferred_element_type=jnp.float32)  # [R, C]
      # Row j*sub + g of the chunk belongs to group g: reduce over the middle (stride) axis.
      gmin = jnp.min(tile.reshape(r, group, sub), axis=1)  # [R, sub]
      m = jnp.min(gmin, axis=1)  # [R]
      # First group attaining the min, via a float min (cheaper than a variadic argmin).
      gid = jnp.min(jnp.where(gmin == m[:, None],
                              jax.lax.broadcasted_iota(jnp.float32, gmin.shape, 1), jnp.inf),
                    axis=1)
      gid = gid.astype(jnp.int32) + off  # [R]
      better = m < best  # strict: earlier chunks win ties
      return (jnp.where(better, m, best), jnp.where(better, gid, arg)), None

    init = (jnp.full((r,), jnp.inf, jnp.float32), jnp.zeros((r,), jnp.int32))
    (_, gbest), _ = jax.lax.scan(step, init, (aug, offsets))
    # Stage 2: exact argmin inside the winning group of each row.
    chunk_id, g = gbest // sub, gbest % sub  # [R]
    members = (chunk_id * code_block + g)[:, None] + (
        jnp.arange(group, dtype=jnp.int32) * sub)[None, :]  # [R, G]
    cand = cp[members]  # [R, G, D]
    if distance == "l2":
      dist = jnp.sum(jnp.square(zb[:, None, :] - cand), axis=-1)  # [R, G]
    else:
      dist = 1.0 - jnp.sum(zb[:, None, :] * cand, axis=-1)
    dist = jnp.where(members < k, dist, jnp.inf)
    j = jnp.argmin(dist, axis=1)  # [R]
    idx = jnp.take_along_axis(members, j[:, None], axis=1)[:, 0]
    return idx.astype(jnp.int32), jnp.take_along_axis(dist, j[:, None], axis=1)[:, 0]

  np_ = _round_up(n, row_block)
  zr = _pad_rows(z, np_).reshape(np_ // row_block, row_block, d)  # [B, R, D]
  idx, dist = jax.lax.map(search_rows, zr)  # [B, R]
  return idx.reshape(-1)[:n], dist.reshape(-1)[:n]

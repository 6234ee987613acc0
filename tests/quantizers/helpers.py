"""Jitted init/apply helpers shared by the quantizer tests (one compile per call site)."""

import functools

import jax

STATS = "quantizer_stats"


def init(q, z, **kw):
  return jax.jit(functools.partial(q.init, **kw))(jax.random.key(0), z)


def train(q, v, z, **kw):
  """One training call with mutable statistics: (z_q, out, merged variables)."""
  (z_q, out), new = jax.jit(functools.partial(q.apply, train=True, mutable=[STATS]))(v, z, **kw)
  return z_q, out, {**v, **new}


def evaluate(q, v, z, **kw):
  return jax.jit(functools.partial(q.apply, **kw))(v, z)


def method(q, v, x, name):
  return jax.jit(functools.partial(q.apply, method=name))(v, x)


def unbox(x):
  return getattr(x, "value", x)

"""TiTok (1D tokens): shape contract, prefix decoding for every k, causal registers, M3, binary."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.quantizers import FSQ, QuantizerOutput
from jaxtok.tokenizers.titok import VARIANTS, TiTok, binary_latent_tokenizer, titok

K = 4
SMALL = dict(image_size=16, patch_size=4, num_tokens=K, code_dim=3)


def _images(b=2, seed=0):
  return jax.random.uniform(jax.random.key(seed), (b, 16, 16, 3), minval=-1, maxval=1)


def _init(model, x):
  rngs = {"params": jax.random.key(1), "dropout": jax.random.key(2)}
  return nn.unbox(jax.jit(model.init)(rngs, x))


@pytest.fixture(scope="module")
def ordered():
  model = titok("tiny", FSQ(levels=(5, 5, 5)), ordering="nested_dropout", causal_registers=True,
                **SMALL)
  x = _images()
  return model, _init(model, x), x


def test_variant_table_sets_vit_sizes_and_token_defaults():
  model = titok("S", FSQ(levels=(8, 5, 5, 5)), code_dim=4)
  assert isinstance(model, TiTok)
  assert (model.width, model.depth, model.num_heads, model.mlp_dim) == (512, 8, 8, 2048)
  assert model.num_tokens == 128 and titok("L", None).num_tokens == 32
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))
  enc = jax.tree.leaves(jax.tree.map(lambda a: a.size, shapes["params"]["encoder"]))
  w, m = 512, 2048
  per_block = (4 * w * w + 4 * w) + (2 * w * m + m + w) + 4 * w  # attn, mlp, two LayerNorms
  assert sum(enc) == 8 * per_block + 2 * w  # + final LayerNorm
  with pytest.raises(ValueError, match="unknown TiTok variant"):
    titok("XL", None)
  assert set(VARIANTS) == {"tiny", "S", "B", "L"}


def test_shape_contract_and_encode_decode_agree_with_forward(ordered):
  model, variables, x = ordered
  x_rec, aux = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  assert x_rec.shape == x.shape and x_rec.dtype == jnp.float32
  assert aux["codes"].shape == (2, K) and aux["codes"].dtype == jnp.int32
  assert set(aux["metrics"]) >= {"usage", "perplexity"}
  codes, _ = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))(variables, x)
  np.testing.assert_array_equal(codes, aux["codes"])
  decoded = jax.jit(lambda v, c: model.apply(v, c, method=model.decode))(variables, codes)
  np.testing.assert_allclose(decoded, x_rec, atol=1e-5)


def test_decode_every_prefix_matches_training_path_with_keep_k(ordered):
  model, variables, x = ordered
  codes, _ = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))(variables, x)
  fwd = jax.jit(lambda v, x, k: model.apply(v, x, keep_k=k)[0])
  dec = jax.jit(lambda v, c: model.apply(v, c, method=model.decode))
  outs = []
  for k in range(1, K + 1):
    img = dec(variables, codes[:, :k])
    assert img.shape == x.shape
    np.testing.assert_allclose(img, fwd(variables, x, jnp.full((2,), k)), atol=1e-5)
    outs.append(img)
  assert not np.allclose(outs[0], outs[-1])  # the prefix length changes the picture


def test_causal_registers_make_a_prefix_independent_of_later_latents(ordered):
  model, variables, x = ordered
  enc = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_latents))
  z = enc(variables, x)
  params = jax.tree.map(lambda a: a, variables["params"])
  params["latents"] = params["latents"].at[2:].add(5.0)  # perturb latent tokens 2 and 3
  z2 = enc({**variables, "params": params}, x)
  np.testing.assert_allclose(z2[:, :2], z[:, :2], atol=1e-5)
  assert not np.allclose(z2[:, 2:], z[:, 2:])


def test_nested_dropout_and_tail_drop_sample_keep_k_in_training(ordered):
  model, variables, x = ordered
  x8 = _images(8, seed=3)

  def keep_k(m):
    return jax.jit(lambda v, x: m.apply(v, x, train=True, rngs={"dropout": jax.random.key(5)})[1]
                   ["keep_k"])(variables, x8)

  kk = np.asarray(keep_k(model))
  assert kk.shape == (8,) and kk.min() >= 1 and kk.max() <= K and len(set(kk)) > 1
  # One-D-Piece: one length per batch.
  assert len(set(np.asarray(keep_k(model.clone(ordering="tail_drop"))))) == 1


def test_matryoshka_sizes_and_errors():
  model = titok("tiny", FSQ(levels=(5, 5, 5)), matryoshka_sizes=(2, 1), **SMALL)
  x = _images()
  variables = _init(model, x)
  x_rec, aux = jax.jit(lambda v, x: model.apply(v, x, train=True))(variables, x)
  assert set(aux["matryoshka"]) == {2, 1}
  assert all(r.shape == x.shape for r in aux["matryoshka"].values())
  codes, _ = jax.jit(lambda v, x: model.apply(v, x, 2, method=model.encode))(variables, x)
  assert codes.shape == (2, 2)
  dec = jax.jit(lambda v, c: model.apply(v, c, method=model.decode))
  assert dec(variables, codes).shape == x.shape
  with pytest.raises(ValueError, match="TiTok decodes 4 tokens"):
    dec(variables, jnp.zeros((2, 3), jnp.int32))  # 3 is neither K nor a Matryoshka size
  with pytest.raises(ValueError, match="16x16"):
    model.apply(variables, jnp.zeros((1, 32, 32, 3)))
  bad = titok("tiny", FSQ(levels=(5, 5, 5)), matryoshka_sizes=(2,), ordering="tail_drop", **SMALL)
  with pytest.raises(ValueError, match="exclusive"):
    _init(bad, x)


class SignBinary(nn.Module):
  """A minimal binary quantizer for wiring tests: b = [z > 0] with a straight-through gradient."""

  @nn.compact
  def __call__(self, z, *, train=False):
    s = jax.nn.sigmoid(z)
    b = (z > 0).astype(jnp.float32)
    z_q = b + s - jax.lax.stop_gradient(s)
    return z_q, QuantizerOutput(codes=b.astype(jnp.int32), losses={}, metrics={})

  def decode(self, codes):
    return codes.astype(jnp.float32)


@pytest.mark.slow  # 8 s on 2 cores (tests/durations.json)
def test_binary_latent_tokenizer_wiring():
  model = binary_latent_tokenizer("tiny", SignBinary(), bits=6, num_tokens=K, image_size=16,
                                  patch_size=4)
  x = _images()
  variables = _init(model, x)
  x_rec, aux = jax.jit(model.apply)(variables, x)
  assert aux["codes"].shape == (2, K, 6)
  assert set(np.unique(aux["codes"])) <= {0, 1}
  decoded = jax.jit(lambda v, c: model.apply(v, c, method=model.decode))(variables, aux["codes"])
  np.testing.assert_allclose(decoded, x_rec, atol=1e-5)
  loss = lambda p: jnp.sum(model.apply({"params": p}, x)[0])
  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert float(jnp.abs(grads["to_code"]["kernel"]).sum()) > 0  # STE passes gradients

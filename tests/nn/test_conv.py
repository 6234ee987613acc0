"""jaxtok.nn.conv: encoder/decoder shapes and the decoder's reduce_on_upsample option."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxtok.nn.conv import ConvDecoder, ConvEncoder


def _count(variables):
  return sum(x.size for x in jax.tree.leaves(variables))


@pytest.mark.slow  # 12 s on 2 cores (tests/durations.json)
def test_encoder_decoder_grid_and_shapes():
  x = jnp.zeros((2, 32, 32, 3))
  enc = ConvEncoder(16, (1, 2, 2), 1, latent_dim=4)
  z = enc.apply(enc.init(jax.random.key(0), x), x)
  assert z.shape == (2, 8, 8, 4)
  for reduce in (False, True):
    dec = ConvDecoder(16, (1, 2, 2), 1, 3, reduce_on_upsample=reduce)
    assert dec.apply(dec.init(jax.random.key(0), z), z).shape == (2, 32, 32, 3)


@pytest.mark.slow  # 9 s on 2 cores (tests/durations.json)
def test_reduce_on_upsample_narrows_the_full_resolution_layers():
  """base 32, mults (1, 2, 2): the last upsampling conv maps 64 -> 32 channels instead of 64 -> 64,
  so the top ResBlock's first conv reads 32 channels and needs no 1x1 skip. Parameters saved,
  in closed form: up conv 9*64*32 + 32 biases; ResBlock conv1 9*32*32; GroupNorm on 32 fewer
  channels (2*32); the skip 64*32 + 32. FLOPs fall by more than a quarter."""
  z = jnp.zeros((4, 8, 8, 4))
  counts, flops = {}, {}
  for reduce in (False, True):
    dec = ConvDecoder(32, (1, 2, 2), 1, 3, reduce_on_upsample=reduce)
    params = dec.init(jax.random.key(0), z)
    counts[reduce] = _count(params)
    cost = jax.jit(dec.apply).lower(params, z).compile().cost_analysis()
    flops[reduce] = (cost[0] if isinstance(cost, list) else cost)["flops"]
    up = nn.unbox(params)["params"]["up1_conv"]["kernel"]
    assert up.shape == (3, 3, 64, 32 if reduce else 64)
  saved = (9 * 64 * 32 + 32) + 9 * 32 * 32 + 2 * 32 + (64 * 32 + 32)
  assert counts[False] - counts[True] == saved
  assert flops[True] < 0.75 * flops[False]

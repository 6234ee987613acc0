"""TiTok's reference-architecture options: the 3 x 3 pixel conv, exact GELU, ``ln_pre``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from jaxtok.nn.transformer import Mlp
from jaxtok.quantizers import FSQ
from jaxtok.tokenizers.titok import titok

SMALL = dict(image_size=16, patch_size=4, num_tokens=4, code_dim=3)


def _model(**kw):
  return titok("tiny", FSQ(levels=(5, 5, 5)), **SMALL, **kw)


def _images(b=2):
  return jax.random.uniform(jax.random.key(0), (b, 16, 16, 3), minval=-1, maxval=1)


def _init(model, x):
  return nn.unbox(jax.jit(model.init)(jax.random.key(1), x))


def test_exact_gelu_is_the_erf_form_and_differs_from_tanh():
  x = jax.random.normal(jax.random.key(0), (4, 8)) * 2
  exact, approx = Mlp(16, gelu_approximate=False), Mlp(16)
  params = nn.unbox(exact.init(jax.random.key(1), x))
  p = params["params"]
  h = x @ p["fc1"]["kernel"] + p["fc1"]["bias"]
  want = (0.5 * h * (1 + erf(h / jnp.sqrt(2.0)))) @ p["fc2"]["kernel"] + p["fc2"]["bias"]
  np.testing.assert_allclose(exact.apply(params, x), want, atol=1e-5)
  assert float(jnp.max(jnp.abs(approx.apply(params, x) - want))) > 1e-5


@pytest.mark.slow  # 10 s on 2 cores (tests/durations.json)
def test_conv_pixel_head_is_a_3x3_conv_on_the_linear_head_image():
  x = _images()
  linear, conv = _model(), _model(pixel_head="conv")
  v_conv = _init(conv, x)
  extra = v_conv["params"]["conv_out"]
  assert extra["kernel"].shape == (3, 3, 3, 3) and extra["bias"].shape == (3,)
  v_lin = {"params": {k: w for k, w in v_conv["params"].items() if k != "conv_out"}}
  codes, _ = linear.apply(v_lin, x, method=linear.encode)
  base = linear.apply(v_lin, codes, method=linear.decode)
  # A centre-tap identity kernel reproduces the linear head; a random one is its 3 x 3 conv.
  ident = jnp.zeros((3, 3, 3, 3)).at[1, 1].set(jnp.eye(3))
  v_id = {"params": {**v_conv["params"], "conv_out": {"kernel": ident, "bias": jnp.zeros(3)}}}
  np.testing.assert_allclose(conv.apply(v_id, codes, method=conv.decode), base, atol=1e-5)
  want = jax.lax.conv_general_dilated(base, extra["kernel"], (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + extra["bias"]
  np.testing.assert_allclose(conv.apply(v_conv, codes, method=conv.decode), want, atol=1e-5)


def test_ln_pre_makes_the_encoder_invariant_to_the_input_scale():
  x = _images()
  gaps = {}
  for ln_pre in (True, False):
    model = _model(ln_pre=ln_pre)
    v = _init(model, x)
    assert ("enc_ln_pre" in v["params"]) == ln_pre and ("dec_ln_pre" in v["params"]) == ln_pre
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, w: w * 5.0 if path[1].key in ("patch_embed", "enc_pos", "latents") else w,
        v)
    z = model.apply(v, x, method=model.encode_latents)
    z5 = model.apply(scaled, x, method=model.encode_latents)
    gaps[ln_pre] = float(jnp.max(jnp.abs(z - z5)))
  # Invariant up to LayerNorm's eps (the N(0, 0.02) tables give token variances ~1e-3).
  assert gaps[False] > 1e-2 and gaps[True] < 0.02 * gaps[False], gaps


def test_bad_options_raise():
  x = _images()
  with pytest.raises(ValueError, match="pixel_head"):
    _init(_model(pixel_head="deconv"), x)
  with pytest.raises(ValueError, match="gelu"):
    _init(_model(gelu="relu"), x)

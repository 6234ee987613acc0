"""VocabTrim's target counts are cached per target, settings and weight type."""

import jax.numpy as jnp
import numpy as np

from jaxtok.nn import bf16
from jaxtok.tasks import vocab_trim_counts as vtc


def test_bf16_weights_get_their_own_cache_file(tmp_path, monkeypatch):
  # A target with bf16 weights continues some prompts differently from the float32 one, so its
  # counts must not be read from (or written to) the float32 target's file.
  monkeypatch.setenv("JAXTOK_CACHE_DIR", str(tmp_path))
  paths = []
  monkeypatch.setattr(vtc, "cached_counts", lambda path, compute: paths.append(path) or np.zeros(3))
  params = {"kernel": jnp.ones((2, 2))}
  kw = dict(vocab_size=3, num_prompts=2, new_tokens=4, max_prompt_tokens=8)
  for p, name in ((params, "smollm2-135m"), (bf16.cast(params), "smollm2-135m"),
                  (params, None)):
    vtc.target_counts(None, p, None, (), cache_name=name, **kw)
  f32, half, none = paths
  assert f32 == vtc.cache_path("smollm2-135m", 2, 4, 8) and f32.startswith(str(tmp_path))
  assert half == vtc.cache_path("smollm2-135m-bf16w", 2, 4, 8) and half != f32
  assert none is None  # a random target is not cached

"""What tasks and reports may ask of an image tokenizer, beyond encode / decode / __call__.

:class:`ImageTokenizer` gives every tokenizer in :data:`jaxtok.tokenizers.TOKENIZERS` the same
descriptive attributes, so a task asks the model what it can do instead of testing class names:

* ``ordered``: trained with ordered tokens (nested dropout / tail drop); any prefix is a code.
* ``prefix_decodable``: ``decode_prefix(codes, keep_k)`` / ``reconstruct_prefix(x, keep_k)``
  exist (TiTok family: the learned mask token stands in for the dropped tail).
* ``token_grid``: codes form a square grid, so a pooled scale ``s`` holds ``s * s`` tokens
  (else a scale or prefix ``s`` holds ``s`` tokens).
* ``exposes_latents``: ``encode_latents(x) -> z`` (before the quantizer) and
  ``decode_latents(z_q) -> x`` exist, which :func:`perturbed_forward` needs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtok.quantizers import codebook_neighbors, perturb_codes


class ImageTokenizer:
  """Defaults of the contract's attributes (a tokenizer overrides what it supports)."""

  ordered = False
  prefix_decodable = False
  token_grid = False
  exposes_latents = False


def check_perturbable(model) -> None:
  """Raises unless RobusTok's latent perturbation applies to ``model`` (see perturbed_forward)."""
  if not model.exposes_latents:
    raise ValueError(f"latent perturbation needs a tokenizer with encode_latents / decode_latents "
                     f"(conv2d, titok); {type(model).__name__} has none")
  if not getattr(model.quantizer, "single_index", False):
    raise ValueError(f"latent perturbation needs a single-index quantizer (vq, fsq, simvq, lfq); "
                     f"got {type(model.quantizer).__name__}")
  if model.ordered:
    raise ValueError("latent perturbation with an ordered tokenizer is not supported")


def perturbed_forward(module, x, rng, *, alpha, fraction, delta: int, train: bool):
  """RobusTok ("Robust Latent Matters", Qiu et al., 2025, Sec. 3), as a flax ``method=``:
  encode -> quantize -> swap a ``fraction`` of the batch's codes, each with prob ``alpha``, for
  one of its ``delta`` nearest codewords -> decode. Un-swapped tokens keep the straight-through
  path to the encoder. -> (x_rec, aux: codes, losses, metrics, swapped)."""
  z = module.encode_latents(x)
  z_q, out = module.quantizer(z, train=train)
  nbrs = codebook_neighbors(jax.lax.stop_gradient(module.quantizer.implicit_codebook()), delta)
  codes = perturb_codes(rng, out.codes, nbrs, alpha=alpha, fraction=fraction)
  swapped = (codes != out.codes)[..., None]
  z_q = jnp.where(swapped, module.quantizer.decode(codes).astype(z_q.dtype), z_q)
  aux = {"codes": codes, "losses": dict(out.losses), "metrics": dict(out.metrics),
         "swapped": jnp.mean(swapped.astype(jnp.float32))}
  return module.decode_latents(z_q), aux

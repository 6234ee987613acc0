"""Input checks shared by the image tokenizers (clear errors before anything compiles)."""

from __future__ import annotations

import jax.numpy as jnp


def check_images(x, name: str, size: tuple[int, int] | None = None, multiple: int = 1) -> None:
  """Raises unless ``x`` is a float [B, H, W, 3] batch (of ``size`` / divisible by ``multiple``)."""
  shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
  if shape is None or len(shape) != 4 or shape[-1] != 3:
    raise ValueError(f"{name} expects images [B, H, W, 3] in [-1, 1]; got shape {shape}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name} expects floating images in [-1, 1]; got dtype {dtype}")
  if size is not None and tuple(shape[1:3]) != tuple(size):
    raise ValueError(f"{name} was built for {size[0]}x{size[1]} images; got {shape[1]}x{shape[2]}")
  if shape[1] % multiple or shape[2] % multiple:
    raise ValueError(f"{name} needs H and W divisible by {multiple}; got {shape[1]}x{shape[2]}")


def merge_aux(auxes: list[dict]) -> dict:
  """Averages the losses and metrics of several quantizer calls (e.g. one per Matryoshka scale)."""
  out = {"losses": {}, "metrics": {}}
  for part in ("losses", "metrics"):
    keys = {k for a in auxes for k in a[part]}
    for k in keys:
      vals = [a[part][k] for a in auxes if k in a[part]]
      out[part][k] = sum(vals) / len(vals)
  return out

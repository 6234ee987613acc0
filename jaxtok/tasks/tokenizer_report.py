"""The tokenizer task's report: held-out PSNR, SSIM, codebook statistics, bits per image,
PSNR at each prefix length for ordered 1D tokenizers, FD-ENL0, perturbed-latent robustness, a
rate-distortion plot against JPEG/WebP, and the pictures (used by :mod:`jaxtok.tasks.tokenizer`).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.data.batches import to_host
from jaxtok.tasks.common import eval_batches
from jaxtok.train.state import TrainState


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def psnr_per_image(x: jax.Array, y: jax.Array) -> jax.Array:
  """PSNR in dB of images in [-1, 1] (measured on the [0, 1] scale); [B, H, W, C] -> [B]."""
  mse = jnp.mean(((jnp.clip(x, -1, 1) - jnp.clip(y, -1, 1)) / 2) ** 2, axis=(1, 2, 3))
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def make_report(config, model, rep, *, forward, eval_params, model_vars, ordered: bool):
  """Builds ``report(state, workdir, step) -> metrics`` (see the module docstring)."""
  from jaxtok.eval.image_metrics import ssim
  from jaxtok.tasks.tokenizer import (  # late: tokenizer.py imports this module
    decode_prefix,
    perturbed_forward,
    prefix_forward,
  )

  def variables(state):
    return {"params": eval_params(state), **model_vars(state.extra)}

  @jax.jit
  def reconstruct(state, x):  # -> (x_rec, codes, per-image psnr, ssim, {scale: psnr})
    x_rec, aux = forward(state, x)
    x_rec = jnp.clip(x_rec, -1, 1)
    mats = {s: psnr_per_image(r, x) for s, r in aux.get("matryoshka", {}).items()}
    return x_rec, aux["codes"], psnr_per_image(x_rec, x), ssim(x_rec, x), mats

  @jax.jit
  def reconstruct_prefix(state, x, keep_k):  # keep_k int [B] -> psnr [B]; one compile for all k
    return psnr_per_image(model.apply(variables(state), x, keep_k, method=prefix_forward), x)

  @jax.jit
  def decode_prefix_fn(state, codes, keep_k):
    return jnp.clip(model.apply(variables(state), codes, keep_k, method=decode_prefix), -1, 1)

  @jax.jit
  def reconstruct_perturbed(state, x, rng):  # every image, each code with prob pfd_alpha
    x_rec, _ = model.apply(variables(state), x, rng, alpha=rep.pfd_alpha, fraction=1.0,
                           delta=rep.pfd_delta, train=False, method=perturbed_forward)
    return jnp.clip(x_rec, -1, 1)

  def report(state: TrainState, workdir: str, step: int):
    from jaxtok.eval.pictures import prefix_decoding_strip, prefix_lengths, reconstruction_grid

    # Prefix PSNR for every TiTok-family model (unordered ones: the ablation baseline).
    one_d = type(model).__name__ == "TiTok"
    ks = (prefix_lengths(model.num_tokens)
          if one_d and not getattr(model, "matryoshka_sizes", ()) else [])
    keep_host_images = rep.fd or rep.pfd or rep.rate_distortion
    acc: dict[str, list] = {}

    def add(key, value):
      acc.setdefault(key, []).append(value)

    shown = None
    for i, batch in enumerate(eval_batches(config)):
      x = to_float(batch["image"])
      keep = to_host(batch["mask"]).astype(bool)
      x_rec, codes, psnr, ssims, mats = reconstruct(state, x)
      add("psnr", to_host(psnr)[keep])
      add("ssim", to_host(ssims)[keep])
      add("codes", to_host(codes)[keep])
      for k in ks:
        p = reconstruct_prefix(state, x, jnp.full((x.shape[0],), k, jnp.int32))
        add(f"psnr@{k}", to_host(p)[keep])
      for s, p in mats.items():
        add(f"psnr@{s}", to_host(p)[keep])
      if rep.pfd:
        xp = reconstruct_perturbed(state, x, jax.random.fold_in(jax.random.PRNGKey(17), i))
        add("ppsnr", to_host(psnr_per_image(xp, x))[keep])
        if sum(len(a) for a in acc.get("perturbed", [])) < rep.max_fd_images:
          add("perturbed", to_host(xp)[keep])
      if keep_host_images and sum(len(a) for a in acc.get("x", [])) < rep.max_fd_images:
        add("x", to_host(x)[keep])
        add("x_rec", to_host(x_rec)[keep])
      if shown is None:
        shown = (to_host(x)[:8], to_host(x_rec)[:8], to_host(codes)[:8])
    cat = {k: np.concatenate(v) for k, v in acc.items()}
    results = {"test/psnr": float(np.mean(cat["psnr"])), "test/ssim": float(np.mean(cat["ssim"]))}
    results.update(codebook_report(cat["codes"], model.quantizer))
    bits = results.get("test/bits_per_image", float("nan"))
    for key in cat:
      if key.startswith("psnr@"):
        results[f"test/{key}"] = float(np.mean(cat[key]))
    if rep.pfd:
      results["test/ppsnr"] = float(np.mean(cat["ppsnr"]))
    if rep.fd or rep.pfd:
      from jaxtok.eval.frechet import frechet_efficientnet_distance

      size = rep.fd_image_size
      if rep.fd:
        results["test/fd_enl0"] = frechet_efficientnet_distance(cat["x"], cat["x_rec"],
                                                                image_size=size)
      if rep.pfd:
        results["test/pfd_enl0"] = frechet_efficientnet_distance(
            cat["x"][:len(cat["perturbed"])], cat["perturbed"], image_size=size)
    if rep.rate_distortion and math.isfinite(bits):
      results.update(rate_distortion_report(cat, results, bits, model, workdir, step,
                                            rep.rd_images, write=jax.process_index() == 0))
    if jax.process_index() == 0 and shown is not None:  # originals above reconstructions
      reconstruction_grid(shown[0], shown[1],
                          os.path.join(workdir, "report", "reconstructions.png"))
      if ordered:
        def prefix(codes_k):  # codes [b, k, ...] -> the image decoded from them
          k = codes_k.shape[1]
          pad = np.zeros(codes_k.shape[:1] + (model.num_tokens - k,) + codes_k.shape[2:],
                         codes_k.dtype)
          full = np.concatenate([codes_k, pad], axis=1)
          return decode_prefix_fn(state, full, jnp.full((len(full),), k, jnp.int32))

        prefix_decoding_strip(prefix, shown[2], shown[0],
                              path=os.path.join(workdir, "report", "prefix_decoding.png"))
    return results

  return report


def codebook_report(codes: np.ndarray, quantizer) -> dict[str, float]:
  """Usage, perplexity (exp entropy of the pooled code histogram), bits per image; codes [N, ...].

  Binary latents report the mean per-bit entropy in bits instead (2^bits codes cannot be counted).
  """
  if quantizer is None or not np.issubdtype(codes.dtype, np.integer):
    return {}
  out = {"test/bits_per_image": code_bits(codes, quantizer)}
  if type(quantizer).__name__ == "BinaryQuantizer":
    p = np.clip(codes.reshape(-1, codes.shape[-1]).mean(0), 1e-12, 1 - 1e-12)
    out["test/bit_entropy"] = float(np.mean(-p * np.log2(p) - (1 - p) * np.log2(1 - p)))
    return out
  num_codes = int(quantizer.num_codes)
  counts = np.bincount(codes.reshape(-1).astype(np.int64), minlength=num_codes)
  p = counts[counts > 0] / counts.sum()
  out["test/codebook_usage"] = float(np.mean(counts > 0))
  out["test/perplexity"] = float(math.exp(-np.sum(p * np.log(p))))
  return out


def rate_distortion_report(cat, results, bits: float, model, workdir: str, step: int,
                           num_images: int, write: bool) -> dict[str, float]:
  """Tokenizer points (each prefix / Matryoshka scale) vs JPEG and WebP at the same byte budgets."""
  from jaxtok.eval.rate_distortion import codec_rate_distortion, plot_rate_distortion

  images = cat["x"][:num_images]  # the codecs' quality search is per image: keep it small
  pixels = images.shape[1] * images.shape[2]
  grid = type(model).__name__ == "Conv2DTokenizer"  # 2D codes [N, h, w]; else [N, K, ...]
  n_tokens = cat["codes"].shape[1] * (cat["codes"].shape[2] if grid else 1)
  points = [(bits, results["test/psnr"])]
  for key, value in results.items():
    if key.startswith("test/psnr@"):
      s = int(key.split("@")[1])
      points.append((bits * (s * s if grid else s) / n_tokens, value))
  points = sorted(set(points))
  codecs = codec_rate_distortion(images, [b for b, _ in points])
  curves = {"tokenizer": [(b / pixels, p) for b, p in points], **codecs}
  out = {}
  for codec, pts in codecs.items():
    out[f"test/{codec}_bpp"] = pts[-1][0]
    out[f"test/{codec}_psnr"] = pts[-1][1]
  if write:
    plot_rate_distortion(curves, os.path.join(workdir, "report", "rate_distortion.png"),
                         title=f"step {step}: PSNR vs bits per pixel")
  return out


def code_bits(codes: np.ndarray, quantizer) -> float:
  """Bits per image of integer codes [B, ...]: elements x log2(K) (binary latents: 1 per bit)."""
  per_image = float(np.prod(codes.shape[1:]))
  if quantizer is None or not np.issubdtype(codes.dtype, np.integer):
    return float("nan")  # continuous tokens have no nominal size
  if type(quantizer).__name__ == "BinaryQuantizer":
    return per_image
  return per_image * math.log2(int(quantizer.num_codes))

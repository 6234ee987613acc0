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
from jaxtok.eval.codebook import codebook_perplexity, codebook_usage
from jaxtok.eval.frechet import frechet_efficientnet_distance
from jaxtok.eval.image_metrics import psnr, ssim, to_float
from jaxtok.eval.pictures import prefix_decoding_strip, prefix_lengths, reconstruction_grid
from jaxtok.eval.rate_distortion import codec_rate_distortion, plot_rate_distortion
from jaxtok.tasks.common import eval_batches
from jaxtok.tokenizers.contract import perturbed_forward
from jaxtok.train.state import TrainState


def clipped_psnr(x_rec: jax.Array, x: jax.Array) -> jax.Array:  # [B]
  """PSNR (dB) of a decoder's output clipped to the image range [-1, 1], as it would be shown."""
  return psnr(jnp.clip(x_rec, -1.0, 1.0), x)


def make_report(config, model, rep, *, forward, eval_params, model_vars):
  """Builds ``report(state, workdir, step) -> metrics`` (see the module docstring)."""

  def variables(state):
    return {"params": eval_params(state), **model_vars(state.extra)}

  @jax.jit
  def reconstruct(state, x):  # -> (x_rec, codes, per-image psnr, ssim, {scale: psnr})
    x_rec, aux = forward(state, x)
    x_rec = jnp.clip(x_rec, -1, 1)
    mats = {s: clipped_psnr(r, x) for s, r in aux.get("matryoshka", {}).items()}
    return x_rec, aux["codes"], psnr(x_rec, x), ssim(x_rec, x), mats

  @jax.jit
  def reconstruct_prefix(state, x, keep_k):  # keep_k int [B] -> psnr [B]; one compile for all k
    return clipped_psnr(model.apply(variables(state), x, keep_k, method="reconstruct_prefix"), x)

  @jax.jit
  def decode_prefix_fn(state, codes, keep_k):
    return jnp.clip(model.apply(variables(state), codes, keep_k, method="decode_prefix"), -1, 1)

  @jax.jit
  def reconstruct_perturbed(state, x, rng):  # every image, each code with prob pfd_alpha
    x_rec, _ = model.apply(variables(state), x, rng, alpha=rep.pfd_alpha, fraction=1.0,
                           delta=rep.pfd_delta, train=False, method=perturbed_forward)
    return jnp.clip(x_rec, -1, 1)

  def report(state: TrainState, workdir: str, step: int):
    # PSNR@k for every prefix-decodable model (for unordered ones: the ablation baseline).
    ks = prefix_lengths(model.num_tokens) if model.prefix_decodable else []
    keep_host_images = rep.fd or rep.pfd or rep.rate_distortion
    acc: dict[str, list] = {}

    def add(key, value):
      acc.setdefault(key, []).append(value)

    shown = None
    for i, batch in enumerate(eval_batches(config)):
      x = to_float(batch["image"])
      keep = to_host(batch["mask"]).astype(bool)
      x_rec, codes, psnrs, ssims, mats = reconstruct(state, x)
      add("psnr", to_host(psnrs)[keep])
      add("ssim", to_host(ssims)[keep])
      add("codes", to_host(codes)[keep])
      for k in ks:
        p = reconstruct_prefix(state, x, jnp.full((x.shape[0],), k, jnp.int32))
        add(f"psnr@{k}", to_host(p)[keep])
      for s, p in mats.items():
        add(f"psnr@{s}", to_host(p)[keep])
      if rep.pfd:
        xp = reconstruct_perturbed(state, x, jax.random.fold_in(jax.random.PRNGKey(17), i))
        add("ppsnr", to_host(psnr(xp, x))[keep])
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
      if model.ordered:
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
  """Codebook usage and perplexity (:mod:`jaxtok.eval.codebook`) of codes [N, ...] pooled over
  positions, and bits per image; bit codes report the mean per-bit entropy in bits instead
  (2^bits codes cannot be counted). Continuous tokens (no quantizer, float codes): nothing."""
  if quantizer is None or not np.issubdtype(codes.dtype, np.integer):
    return {}
  out = {"test/bits_per_image": float(np.prod(codes.shape[1:])) * quantizer.code_bits}
  if quantizer.codes_are_bits:
    p = np.clip(codes.reshape(-1, codes.shape[-1]).mean(0), 1e-12, 1 - 1e-12)
    out["test/bit_entropy"] = float(np.mean(-p * np.log2(p) - (1 - p) * np.log2(1 - p)))
    return out
  flat = jnp.asarray(codes.reshape(-1), jnp.int32)
  out["test/codebook_usage"] = float(codebook_usage(flat, int(quantizer.num_codes)))
  out["test/perplexity"] = float(codebook_perplexity(flat, int(quantizer.num_codes)))
  return out


def rate_distortion_report(cat, results, bits: float, model, workdir: str, step: int,
                           num_images: int, write: bool) -> dict[str, float]:
  """Tokenizer points (each prefix / Matryoshka scale) vs JPEG and WebP at the same byte budgets."""
  images = cat["x"][:num_images]  # the codecs' quality search is per image: keep it small
  pixels = images.shape[1] * images.shape[2]
  grid = model.token_grid  # 2D codes [N, h, w]; else [N, K, ...]
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

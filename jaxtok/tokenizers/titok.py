"""TiTok: a ViT tokenizer of an image into K 1D latent tokens, with ordered-token options.

"An Image is Worth 32 Tokens for Reconstruction and Generation" (Yu et al., 2024):

    encoder:  [patch_embed(x) + pos_p ; latents + pos_l]  -> ViT -> keep the K latents
              -> LayerNorm -> Linear to code_dim -> quantizer                       (Sec. 3.2)
    decoder:  [mask_token + pos_p (P of them) ; Linear(z_q) + pos_l] -> ViT
              -> keep the P patch slots -> Linear to p*p*3 -> unpatchify

Options on the same module (``ordering``):

* ``"nested_dropout"`` -- FlexTok (Bachmann et al., 2025): per example keep_k ~ U{1..K} or U over
  powers of two; quantized registers at positions >= keep_k become a learned mask token;
  ``causal_registers`` adds the causal register mask in the encoder.
* ``"tail_drop"`` -- One-D-Piece (Miwa et al., 2025): one k ~ U{1..K} per batch.

With either, ``decode(codes[:, :k])`` works for every k (the tail is padded with the mask token).
``matryoshka_sizes`` (M3, Cai et al., 2024) pools the K latents to fewer tokens instead.
``binary_latent_tokenizer`` wires a binary quantizer as in Instella-T2I (AMD, 2025): code_dim =
bits per token, each token a vector of {0, 1} bits linearly embedded in the decoder.

Differences from the reference code (bytedance/1d-tokenizer, ``modeling/modules/blocks.py``,
``TiTokEncoder`` / ``TiTokDecoder``, non-legacy pixel head). Three are options, measured for
quality in docs/tokenizers.md ("Reference options"): ``pixel_head='conv'`` adds the reference's
3 x 3 convolution on the image after the per-patch linear map (default ``'linear'``, no conv);
``gelu='exact'`` uses the erf GELU of torch's ``nn.GELU()`` (default ``'tanh'``); ``ln_pre``
adds the reference's LayerNorm on the token sequence before each ViT. The VQ's
``distance='cosine'`` is the reference's ``use_l2_norm`` (l2-normalised codes and codebook).
Not options: no class token in either ViT (the sequence is P + K, not 1 + P + K; the class
token's output is never read); the latent tokens are one learned table (the reference adds a
learned positional table to learned tokens: the same function class); LayerNorm eps 1e-6
(torch: 1e-5); initialisers xavier-uniform for dense layers and N(0, 0.02) for tables (the
reference: torch's Linear default and width^-0.5 * N(0, 1)). The patch embedding is a linear map
of flattened patches, the same function as the reference's stride-p convolution.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxtok.nn.conv import conv
from jaxtok.nn.partitioning import logical_init
from jaxtok.nn.transformer import Transformer, make_norm
from jaxtok.tokenizers import matryoshka, ordering
from jaxtok.tokenizers.checks import check_images, merge_aux
from jaxtok.tokenizers.contract import ImageTokenizer

# ViT sizes of TiTok's encoder and decoder (Table 1 of the paper; 'tiny' is for CPU tests).
VARIANTS: dict[str, dict[str, int]] = {
    "tiny": dict(width=32, depth=1, num_heads=2, mlp_dim=64),
    "S": dict(width=512, depth=8, num_heads=8, mlp_dim=2048),
    "B": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "L": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
}
PIXEL_HEADS = ("linear", "conv")
GELUS = ("tanh", "exact")
# The paper's headline token counts per size: TiTok-L-32, TiTok-B-64, TiTok-S-128.
DEFAULT_TOKENS = {"tiny": 8, "S": 128, "B": 64, "L": 32}


def patchify(x: jnp.ndarray, p: int) -> jnp.ndarray:  # [B, H, W, C] -> [B, H/p * W/p, p*p*C]
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: jnp.ndarray, p: int, h: int, w: int) -> jnp.ndarray:  # inverse of patchify
  b, _, d = x.shape
  c = d // (p * p)
  x = x.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def _embed_param(module: nn.Module, name: str, shape: tuple[int, int]) -> jnp.ndarray:
  return module.param(name, logical_init(nn.initializers.normal(0.02), (None, "embed")), shape)


class TiTok(ImageTokenizer, nn.Module):
  """1D tokenizer: image [B, H, W, 3] <-> K tokens (codes [B, K, ...]).

  Attributes:
    quantizer: module obeying the quantizer contract, acting on [..., code_dim].
    image_size, patch_size: square images; P = (image_size / patch_size)^2 patches.
    num_tokens: K latent tokens.
    code_dim: quantizer input width (12 for TiTok's VQ, len(levels) for FSQ, bits for binary).
    width, depth, num_heads, mlp_dim: encoder ViT; decoder_* default to the same.
    ordering: "none", "nested_dropout" or "tail_drop" (see module docstring).
    keep_k_distribution: "uniform" or "pow2" for nested dropout.
    causal_registers: causal attention among latent tokens in the encoder.
    matryoshka_sizes: extra pooled token counts (divisors of K); exclusive with ``ordering``.
    pixel_head: "linear" (per-patch linear map) or "conv" (the same, then a 3 x 3 conv on the
      image, as the reference).
    gelu: "tanh" or "exact" (erf) GELU in both ViTs.
    ln_pre: a LayerNorm on the input sequence of each ViT (the reference's ``ln_pre``).
  """

  quantizer: nn.Module
  image_size: int = 256
  patch_size: int = 16
  num_tokens: int = 32
  code_dim: int = 12
  width: int = 512
  depth: int = 8
  num_heads: int = 8
  mlp_dim: int = 2048
  decoder_width: int | None = None
  decoder_depth: int | None = None
  decoder_num_heads: int | None = None
  decoder_mlp_dim: int | None = None
  ordering: str = "none"
  keep_k_distribution: str = "uniform"
  causal_registers: bool = False
  matryoshka_sizes: tuple[int, ...] = ()
  pixel_head: str = "linear"
  gelu: str = "tanh"
  ln_pre: bool = False
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def ordered(self) -> bool:
    return self.ordering != "none"

  def setup(self):
    if self.ordering not in ordering.ORDERINGS:
      raise ValueError(f"unknown ordering {self.ordering!r}; valid: {ordering.ORDERINGS}")
    if self.keep_k_distribution not in ordering.KEEP_K_DISTRIBUTIONS:
      raise ValueError(f"unknown keep_k_distribution {self.keep_k_distribution!r}; valid: "
                       f"{ordering.KEEP_K_DISTRIBUTIONS}")
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size "
                       f"{self.patch_size}")
    if self.matryoshka_sizes and self.ordered:
      raise ValueError("matryoshka_sizes and ordered tokens are exclusive options")
    matryoshka.check_scales_1d(tuple(self.matryoshka_sizes), self.num_tokens)
    if self.pixel_head not in PIXEL_HEADS:
      raise ValueError(f"pixel_head must be one of {PIXEL_HEADS}; got {self.pixel_head!r}")
    if self.gelu not in GELUS:
      raise ValueError(f"gelu must be one of {GELUS}; got {self.gelu!r}")
    approx = self.gelu == "tanh"
    dw = self.decoder_width or self.width
    p, k = self.num_patches, self.num_tokens
    dense = lambda f, axes, name: nn.Dense(f, dtype=self.dtype, name=name,
                                           kernel_init=logical_init(
                                               nn.initializers.xavier_uniform(), axes))
    self.patch_embed = dense(self.width, (None, "embed"), "patch_embed")
    self.enc_pos = _embed_param(self, "enc_pos", (p, self.width))
    self.latents = _embed_param(self, "latents", (k, self.width))
    self.encoder = Transformer(self.depth, self.num_heads, self.mlp_dim, dtype=self.dtype,
                               remat=self.remat, gelu_approximate=approx, name="encoder")
    self.to_code = dense(self.code_dim, ("embed", None), "to_code")
    self.from_code = dense(dw, (None, "embed"), "from_code")
    self.dec_latent_pos = _embed_param(self, "dec_latent_pos", (k, dw))
    self.dec_pos = _embed_param(self, "dec_pos", (p, dw))
    self.dec_mask = self.param("dec_mask", logical_init(nn.initializers.normal(0.02), ("embed",)),
                               (dw,))
    # The learned stand-in for dropped / not-yet-decoded tokens, in quantized-code space.
    self.token_mask = self.param("token_mask", nn.initializers.normal(0.02), (self.code_dim,))
    self.decoder = Transformer(self.decoder_depth or self.depth,
                               self.decoder_num_heads or self.num_heads,
                               self.decoder_mlp_dim or self.mlp_dim, dtype=self.dtype,
                               remat=self.remat, gelu_approximate=approx, name="decoder")
    self.to_pixels = dense(self.patch_size**2 * 3, ("embed", None), "to_pixels")
    if self.ln_pre:
      self.enc_ln_pre = make_norm("layernorm", 1e-6, "enc_ln_pre", self.dtype)
      self.dec_ln_pre = make_norm("layernorm", 1e-6, "dec_ln_pre", self.dtype)
    if self.pixel_head == "conv":
      self.conv_out = conv(3, 3, "conv_out", dtype=self.dtype)

  # -- the tokenizer contract ----------------------------------------------------------------

  exposes_latents = True
  token_grid = False  # 1D: a prefix of k codes is k tokens (the rate-distortion report's count)

  @property
  def prefix_decodable(self) -> bool:
    """Any prefix of the K tokens decodes (the mask token stands in for the rest); reports
    measure PSNR@k for it (for unordered models the FlexTok / One-D-Piece ablation baseline)."""
    return not self.matryoshka_sizes


  def encode_latents(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, H, W, 3] -> [B, K, code_dim]
    check_images(x, "TiTok", (self.image_size, self.image_size))
    b = x.shape[0]
    patches = self.patch_embed(patchify(x.astype(self.dtype), self.patch_size)) + self.enc_pos
    lat = jnp.broadcast_to(self.latents.astype(self.dtype), (b,) + self.latents.shape)
    h = jnp.concatenate([patches, lat], axis=1)  # [B, P + K, W]
    mask = None
    if self.causal_registers:
      mask = ordering.causal_register_mask(self.num_patches, self.num_tokens)
    if self.ln_pre:
      h = self.enc_ln_pre(h)
    h = self.encoder(h, mask=mask)
    return self.to_code(h[:, self.num_patches:]).astype(jnp.float32)  # [B, K, code_dim]

  def decode_latents(self, z_q: jnp.ndarray) -> jnp.ndarray:  # [B, K, code_dim] -> [B, H, W, 3]
    b = z_q.shape[0]
    lat = self.from_code(z_q.astype(self.dtype)) + self.dec_latent_pos
    slots = jnp.broadcast_to((self.dec_mask + self.dec_pos).astype(self.dtype),
                             (b,) + self.dec_pos.shape)
    h = jnp.concatenate([slots, lat], axis=1)
    h = self.decoder(self.dec_ln_pre(h) if self.ln_pre else h)
    pixels = unpatchify(self.to_pixels(h[:, :self.num_patches]), self.patch_size,
                        self.image_size, self.image_size)
    if self.pixel_head == "conv":
      pixels = self.conv_out(pixels)
    return pixels.astype(jnp.float32)

  # -- public API ----------------------------------------------------------------------------

  def __call__(self, x: jnp.ndarray, train: bool = False,
               keep_k: jnp.ndarray | None = None):  # x [B, H, W, 3]; keep_k int [B]
    """Training forward -> (x_rec [B, H, W, 3], aux: codes, losses, metrics[, keep_k, matryoshka]).

    For ordered tokenizers, ``keep_k`` (int [B]) forces the prefix length; otherwise it is
    sampled when ``train`` (from the 'dropout' rng stream) and is K in evaluation.
    """
    z = self.encode_latents(x)  # [B, K, code_dim]
    z_q, out = self.quantizer(z, train=train)
    aux = {"codes": out.codes, "losses": dict(out.losses), "metrics": dict(out.metrics)}
    if self.ordered:
      b = x.shape[0]
      if keep_k is None:
        if train:
          keep_k = ordering.sample_keep_k(
              self.make_rng("dropout"), b, self.num_tokens, self.keep_k_distribution,
              per_example=self.ordering == "nested_dropout")
        else:
          keep_k = jnp.full((b,), self.num_tokens, jnp.int32)
      keep = ordering.prefix_mask(keep_k, self.num_tokens)  # [B, K]
      z_q = ordering.replace_dropped(z_q, keep, self.token_mask)
      aux["keep_k"] = keep_k
    x_rec = self.decode_latents(z_q)
    if self.matryoshka_sizes:
      parts, recs = [aux], {}
      for n in self.matryoshka_sizes:
        zn_q, out_n = self.quantizer(matryoshka.pool_tokens_1d(z, n), train=train)
        recs[n] = self.decode_latents(matryoshka.unpool_tokens_1d(zn_q, self.num_tokens))
        parts.append({"losses": dict(out_n.losses), "metrics": dict(out_n.metrics)})
      aux.update(merge_aux(parts))
      aux["matryoshka"] = recs
    return x_rec, aux

  def encode(self, x: jnp.ndarray, num_tokens: int | None = None):
    """-> (codes [B, K, ...], aux with metrics). ``num_tokens`` picks a Matryoshka size."""
    z = self.encode_latents(x)
    if num_tokens is not None and num_tokens != self.num_tokens:
      if num_tokens not in self.matryoshka_sizes:
        raise ValueError(f"num_tokens {num_tokens} is not a trained size "
                         f"{(self.num_tokens,) + tuple(self.matryoshka_sizes)}")
      z = matryoshka.pool_tokens_1d(z, num_tokens)
    _, out = self.quantizer(z, train=False)
    return out.codes, {"metrics": dict(out.metrics)}

  def decode(self, codes: jnp.ndarray) -> jnp.ndarray:  # [B, k, ...] -> [B, H, W, 3]
    """Decodes K codes; ordered tokenizers also any prefix k < K, Matryoshka any trained size."""
    z_q = self.quantizer.decode(codes).astype(jnp.float32)  # [B, k, code_dim]
    k = z_q.shape[1]
    if k != self.num_tokens:
      if self.ordered:
        z_q = ordering.pad_prefix(z_q, self.num_tokens, self.token_mask)
      elif k in self.matryoshka_sizes:
        z_q = matryoshka.unpool_tokens_1d(z_q, self.num_tokens)
      else:
        raise ValueError(f"TiTok decodes {self.num_tokens} tokens (or a prefix when ordered); "
                         f"got {k}")
    return self.decode_latents(z_q)

  def decode_prefix(self, codes: jnp.ndarray, keep_k: jnp.ndarray) -> jnp.ndarray:
    """Decodes the first ``keep_k`` (int [B]) of K codes [B, K, ...] (the tail is ignored): equals
    ``decode(codes[:, :k])`` for each row, with one compilation for every k."""
    z_q = self.quantizer.decode(codes).astype(jnp.float32)
    return self.decode_latents(ordering.replace_dropped(
        z_q, ordering.prefix_mask(keep_k, self.num_tokens), self.token_mask))

  def reconstruct_prefix(self, x: jnp.ndarray, keep_k: jnp.ndarray) -> jnp.ndarray:
    """x [B, H, W, 3] reconstructed from its first ``keep_k`` (int [B]) tokens, in evaluation."""
    z_q, _ = self.quantizer(self.encode_latents(x), train=False)
    return self.decode_latents(ordering.replace_dropped(
        z_q, ordering.prefix_mask(keep_k, self.num_tokens), self.token_mask))


def titok(variant: str, quantizer: nn.Module, num_tokens: int | None = None,
          **kwargs) -> TiTok:
  """TiTok of a named size ('tiny', 'S', 'B', 'L'); tokens default to the paper's per size."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown TiTok variant {variant!r}; valid: {sorted(VARIANTS)}")
  sizes = dict(VARIANTS[variant])
  sizes.update(kwargs)
  return TiTok(quantizer=quantizer, num_tokens=num_tokens or DEFAULT_TOKENS[variant], **sizes)


def binary_latent_tokenizer(variant: str, quantizer: nn.Module, bits: int = 64,
                            num_tokens: int = 128, **kwargs) -> TiTok:
  """Instella-T2I wiring: a ViT over patches + latents, ``bits`` logits per token, binary codes.

  ``quantizer`` is the binary quantizer (Bernoulli(sigmoid(l / tau)) with straight-through
  gradient in training, [s > 0.5] in evaluation) acting on [..., bits]; the decoder embeds the
  bit vectors linearly (the paper's ``b * E``).
  """
  return titok(variant, quantizer, num_tokens=num_tokens, code_dim=bits, **kwargs)

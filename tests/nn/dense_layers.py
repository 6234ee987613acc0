"""A Flax module with every weight layout the int8 and bf16 weight paths intercept."""

import flax.linen as nn


class Layers(nn.Module):
  """Embed, DenseGeneral to heads (with bias), DenseGeneral over two axes, Dense, tied head."""

  @nn.compact
  def __call__(self, ids):
    embed = nn.Embed(50, 16, name="embed")
    x = embed(ids)  # [B, T, 16]
    x = nn.DenseGeneral((2, 8), name="heads")(x)  # [B, T, 2, 8], with bias
    x = nn.DenseGeneral(16, axis=(-2, -1), use_bias=False, name="merge")(x)
    x = nn.LayerNorm(name="norm")(nn.Dense(16, name="mlp")(x))
    return embed.attend(x)

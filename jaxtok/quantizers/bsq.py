"""Binary spherical quantization (BSQ).

"Image and Video Tokenization with Binary Spherical Quantization", Zhao, Xiong, Krahenbuhl (2024),
Sec. 3: project to K dims, l2-normalise ``u = z / ||z||`` and quantize to the hypercube corner on
the sphere, ``u_q = sign(u) / sqrt(K)`` (straight-through). The entropy regulariser is LFQ's with
the corners scaled by ``1/sqrt(K)`` (its per-sample term factorises over bits; the batch term is
group-factorised). Everything else is :class:`jaxtok.quantizers.lfq.LFQ`.
"""

from __future__ import annotations

from jaxtok.quantizers.lfq import LFQ


class BSQ(LFQ):
  """LFQ on the unit sphere: codes ``+-1/sqrt(K)`` for l2-normalised inputs."""

  spherical: bool = True
  temperature: float = 0.01

"""Image tokenizers: ``encode(x) -> (codes, aux)``, ``decode(codes) -> x``, and the training
forward ``__call__(x, train) -> (x_rec, aux)`` with aux = {codes, losses, metrics, ...}.

Images are float32 in [-1, 1], [B, H, W, 3]. Each tokenizer takes its quantizer as a module field
(any module obeying the quantizer contract of ``jaxtok.quantizers``). ``TOKENIZERS`` maps names
to classes for the task layer.
"""

from jaxtok.registry import Registry
from jaxtok.tokenizers.conv2d import Conv2DTokenizer
from jaxtok.tokenizers.gpstoken import GPSToken
from jaxtok.tokenizers.slots import SlotTokenizer
from jaxtok.tokenizers.titok import TiTok, binary_latent_tokenizer, titok

TOKENIZERS: Registry = Registry("tokenizer")
TOKENIZERS.register("conv2d", Conv2DTokenizer)
TOKENIZERS.register("titok", TiTok)
TOKENIZERS.register("slots", SlotTokenizer)
TOKENIZERS.register("gpstoken", GPSToken)

__all__ = ["TOKENIZERS", "Conv2DTokenizer", "GPSToken", "SlotTokenizer", "TiTok",
           "binary_latent_tokenizer", "titok"]

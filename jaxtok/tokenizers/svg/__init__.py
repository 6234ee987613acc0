"""HiVG: SVG icons as a hierarchy (paths -> commands -> coordinates) and its tokens."""

from jaxtok.tokenizers.svg.parser import (
  CANONICAL,
  Command,
  Icon,
  Path,
  SVGError,
  normalise,
  parse_svg,
  to_svg,
)
from jaxtok.tokenizers.svg.tokenizer import (
  BOS,
  EOS,
  PAD,
  PATH,
  HiVGTokenizer,
  Quantised,
  TokenError,
  max_coordinate_error,
  quantise,
  train_segments,
)

__all__ = ["BOS", "CANONICAL", "EOS", "PAD", "PATH", "Command", "HiVGTokenizer", "Icon", "Path",
           "Quantised", "SVGError", "TokenError", "max_coordinate_error", "normalise",
           "parse_svg", "quantise", "to_svg", "train_segments"]

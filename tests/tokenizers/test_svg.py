"""HiVG: the SVG hierarchy parse (exact canonical commands), arcs, malformed input, the
tokenize -> detokenize round trip against the half-step bound, and learned segments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxtok.tokenizers.svg import (
  PATH,
  Command,
  HiVGTokenizer,
  SVGError,
  TokenError,
  max_coordinate_error,
  normalise,
  parse_svg,
  quantise,
  to_svg,
  train_segments,
)
from jaxtok.tokenizers.svg.parser import arc_to_cubics

SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}"><path d="{d}"/></svg>'


def commands(d: str, box: str = "0 0 10 10"):
  icon = parse_svg(SVG.format(box=box, d=d))
  assert len(icon.paths) == 1
  return icon.paths[0].commands


def assert_commands(got, want):
  assert [c.op for c in got] == [op for op, _ in want]
  for c, (op, args) in zip(got, want, strict=True):
    assert c.args == pytest.approx(args, abs=1e-12), op


def test_every_command_becomes_absolute_m_l_c_z():
  """Hand-computed: relative moves, implicit linetos after m, H/V, S reflection of the previous
  control point, Q/T degree-elevated (controls p0 + 2/3 (q - p0), p + 2/3 (q - p)), and the
  cursor back at the subpath start after z."""
  got = commands("M1 2h3v4l-1 1zm5 5 1 1H2V1c1 0 2 1 2 2s1 1 2 0Q7 1 8 2T9 4")
  assert_commands(got, [
      ("M", (1, 2)), ("L", (4, 2)), ("L", (4, 6)), ("L", (3, 7)), ("Z", ()),
      ("M", (6, 7)), ("L", (7, 8)), ("L", (2, 8)), ("L", (2, 1)),
      ("C", (3, 1, 4, 2, 4, 3)), ("C", (4, 4, 5, 4, 6, 3)),
      ("C", (20 / 3, 5 / 3, 22 / 3, 4 / 3, 8, 2)), ("C", (26 / 3, 8 / 3, 9, 10 / 3, 9, 4))])


def test_numbers_without_separators_and_packed_arc_flags():
  assert_commands(commands("M.5.5-1-1e1L2,3"), [("M", (0.5, 0.5)), ("L", (-1, -10)),
                                                ("L", (2, 3))])
  packed = commands("M0 0a5 5 0 0110 0")  # flags '0' '1', then x = 10, y = 0
  spaced = commands("M0 0A5 5 0 0 1 10 0")
  assert [c.args for c in packed] == [c.args for c in spaced]


def test_arc_is_quarter_cubics_on_the_circle():
  """A half circle (centre (5, 0), r 5; sweep 1 passes through (5, -5)) is two cubics; every
  point of them is within 2.73e-4 r of the circle (the closed-form error of the 4/3 tan(pi/8)
  quarter-circle cubic), and radii too small to reach the end point are scaled up (SVG F.6.6)."""
  arc = commands("M0 0A5 5 0 0 1 10 0")[1:]
  assert [c.op for c in arc] == ["C", "C"]
  assert arc[0].args[4:] == pytest.approx((5, -5), abs=1e-12)
  assert arc[1].args[4:] == (10, 0)
  start = (0.0, 0.0)
  for c in arc:
    p = np.array([start, c.args[0:2], c.args[2:4], c.args[4:6]])
    t = np.linspace(0, 1, 101)[:, None]
    pts = ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2]
           + t ** 3 * p[3])
    r = np.hypot(pts[:, 0] - 5, pts[:, 1])
    assert 2.7e-4 * 5 < np.max(np.abs(r - 5)) <= 2.73e-4 * 5  # tight: the maximum is 2.725e-4 r
    start = c.args[4:6]
  small = commands("M0 0A1 1 0 0 1 10 0")[1:]
  np.testing.assert_allclose([c.args for c in small], [c.args for c in arc], atol=1e-9)
  assert arc_to_cubics((0, 0), 0, 3, 0, False, True, (4, 0)) == [Command("L", (4, 0))]
  assert arc_to_cubics((1, 1), 3, 3, 0, False, True, (1, 1)) == []


@pytest.mark.parametrize("text, match", [
    ("<svg viewBox='0 0 1 1'><path d='M0 0'/>", "bad XML"),
    (SVG.format(box="0 0 10 10", d="M0 0X1 2"), r"unknown path command 'X' at offset 4"),
    (SVG.format(box="0 0 10 10", d="M0 0L1 2 3"), r"'L' at offset 4 takes 2 arguments.*got 3"),
    (SVG.format(box="0 0 10 10", d="M0 0c1 2 3 4"), r"'c' at offset 4 takes 6 arguments.*got 4"),
    (SVG.format(box="0 0 10 10", d="M0 0L"), r"'L' at offset 4 takes 2 arguments.*got 0"),
    (SVG.format(box="0 0 10 10", d="M0 0Z 1"), r"'Z' at offset 4 takes no arguments, got 1"),
    (SVG.format(box="0 0 10 10", d="M0 0A1 1 0 2 1 3 3"), "arc flag .* must be 0 or 1"),
    (SVG.format(box="0 0 10 10", d="L1 1"), "must start with a moveto"),
    (SVG.format(box="0 0 10 10", d="M0 0 L1 1 #"), "unexpected character '#'"),
    ("<svg><path d='M0 0'/></svg>", "needs a viewBox"),
    (SVG.format(box="0 0 -1 10", d="M0 0"), "bad viewBox"),
    ("<svg viewBox='0 0 1 1'><circle r='1'/></svg>", r"unsupported element <circle>"),
    ("<svg viewBox='0 0 1 1'><path transform='scale(2)' d='M0 0'/></svg>", "transform"),
    ("<html/>", "root element must be <svg>"),
    ("<svg viewBox='0 0 1 1'/>", "no <path>"),
])
def test_malformed_svg_is_named(text, match):
  with pytest.raises(SVGError, match=match):
    parse_svg(text)


def test_exact_tokens_of_a_small_icon():
  """viewBox 32 wide, grid 16: scale 1/2. Hand-quantised: M(2,2), L(10,2) -> <h> d_8,
  L(10,10.3 -> 10) -> <v> d_8, a zero-length L dropped, C relative to (10,10), Z."""
  tok = HiVGTokenizer(grid=16, margin=2)
  q = tok.quantise(SVG.format(box="0 0 32 32",
                              d="M4 4L20 4L20 20.6L20.2 20.4C20 22 18 24 16 24Z"))
  assert q.paths == ((("M", (2, 2)), ("L", (10, 2)), ("L", (10, 10)),
                      ("C", (10, 11, 9, 12, 8, 12)), ("Z", ())),)
  assert q.kept == ((0, 1, 2, 4, 5),) and q.clamped == 0
  ids = tok.encode_quantised(q)
  assert [tok.token_name(t) for t in ids] == [
      "<path>", "<M>", "P_2", "P_2", "<h>", "d_8", "<v>", "d_8",
      "<c>", "d_0", "d_1", "d_-1", "d_2", "d_-2", "d_2", "<z>"]
  assert tok.decode(ids).paths == q.paths
  assert tok.vocab_size == 4 + 6 + (16 + 4 + 1) + (2 * 20 + 1)  # specials, ops, P, d


def random_path(rng, n: int, box) -> str:
  """A random path of lines, cubics, quadratics and closes with every point inside ``box``."""
  x0, y0, w, h = box

  def pts(k):
    return " ".join(f"{x0 + rng.uniform() * w:.3f} {y0 + rng.uniform() * h:.3f}"
                    for _ in range(k))

  parts = ["M" + pts(1)]
  for _ in range(n):
    kind = int(rng.integers(4))
    parts.append(("L" + pts(1), "C" + pts(3), "Q" + pts(2), "Z")[kind])
  return "".join(parts)


@pytest.mark.parametrize("grid", [16, 128])
def test_round_trip_is_exact_up_to_half_a_grid_step(grid):
  """Random icons inside their (non-square) viewBox: detokenize(tokenize(x)) is the quantised
  icon exactly, and every kept coordinate is within 0.5 grid units of the normalised one, i.e.
  0.5 * max(W, H) / grid user units of the original (the closed-form bound of rounding)."""
  rng = np.random.default_rng(grid)
  tok = HiVGTokenizer(grid=grid, margin=4)
  worst = 0.0
  for k in range(20):
    box = (10.0, -5.0, 300.0, 200.0 + 10 * k)
    icon = parse_svg(SVG.format(box=" ".join(map(str, box)), d=random_path(rng, 12, box)))
    norm = normalise(icon, grid)
    q = quantise(norm, grid, 4)
    assert q.clamped == 0
    back = tok.decode(tok.encode_quantised(q))
    assert back.paths == q.paths
    err = max_coordinate_error(norm, q)
    assert err <= 0.5
    worst = max(worst, err)
    # In the original's units: undo the normalisation on the decoded icon.
    x0, y0, w, h = box
    s = grid / max(w, h)
    offset = ((grid - w * s) / 2 - x0 * s, (grid - h * s) / 2 - y0 * s)
    for path, qpath, src in zip(icon.paths, back.paths, q.kept, strict=True):
      for (_, args), j in zip(qpath, src, strict=True):
        for i, (v, r) in enumerate(zip(path.commands[j].args, args, strict=True)):
          assert abs((r - offset[i % 2]) / s - v) <= 0.5 / s + 1e-9
  assert worst > 0.45  # the bound is tight: rounding errors come close to half a step


def test_clamping_is_counted_and_bounded_by_the_margin():
  tok = HiVGTokenizer(grid=16, margin=2)
  q = tok.quantise(SVG.format(box="0 0 16 16", d="M1 1L30 1L1 -7Z"))
  assert q.paths == ((("M", (1, 1)), ("L", (18, 1)), ("L", (1, -2)), ("Z", ())),)
  assert q.clamped == 2


def test_decode_names_the_broken_token():
  tok = HiVGTokenizer(grid=16, margin=2)
  ok = tok.encode(SVG.format(box="0 0 16 16", d="M1 1L5 5Z"))
  with pytest.raises(TokenError, match=r"<l> at atomic token 4 takes 2 relative d_"):
    tok.decode(ok[:-2])
  with pytest.raises(TokenError, match="must start with <path>"):
    tok.decode(ok[1:])
  with pytest.raises(TokenError, match="outside the vocabulary"):
    tok.decode([PATH, 10_000])
  q, whole = tok.decode_prefix(ok[:-2] + [ok[-1]])  # a sampled row that breaks mid-command
  assert not whole and q.paths == ((("M", (1, 1)),),)


def units_of(tok, atoms):
  """Splits atomic tokens into whole commands, or raises: a segment never holds a part."""
  out, i = [], 0
  while i < len(atoms):
    name = tok.token_name(atoms[i])
    n = {"<M>": 2, "<l>": 2, "<h>": 1, "<v>": 1, "<c>": 6, "<z>": 0}[name]
    out.append(tuple(atoms[i:i + 1 + n]))
    i += 1 + n
  assert i == len(atoms)
  return out


def test_segments_bind_whole_commands():
  """Five icons M_i C_i <h> d_2 C'_i Z: only the unit '<h> d_2' repeats (5 times, gain 5); the
  M and (relative) C units differ per icon, so they and their pairs are seen once (< min_count
  2), and Z saves nothing: the one learned segment is that unit, encoded as one token."""
  tok = HiVGTokenizer(grid=16, margin=0)
  icons = []
  for i in range(5):
    d = (f"M{i} 0C{i} {1 + i} {i} {2 + i} {i + 1} {3 + i}h2"
         f"C{i + 4} {3 + i} {i + 4} {4 + 2 * i} {i + 5} {5 + 2 * i}Z")
    icons.append(tok.quantise(SVG.format(box="0 0 16 16", d=d)))
  seg = train_segments(tok, icons, num_merges=10, min_count=2)
  h2 = tuple(tok.units(icons[0])[0][2])
  assert [tok.token_name(t) for t in h2] == ["<h>", "d_2"]
  assert seg.merges == ((h2, ()),)
  ids = seg.encode_quantised(icons[0])
  assert len(ids) == len(tok.encode_quantised(icons[0])) - 1
  assert seg.atomic_size in ids and seg.decode(ids).paths == icons[0].paths
  assert train_segments(tok, icons, num_merges=10, min_count=6).merges == ()


def test_segment_pairs_merge_the_biggest_saving_first():
  """Three icons M <h> d_2 <v> d_2 Z, all units equal. Gains: pair (M, h) 3 * (3 + 2 - 1) = 12
  beats (h, v) 9, (v, Z) 6 and unit M 6; so the first segment is '<M> P_1 P_1 <h> d_2'."""
  tok = HiVGTokenizer(grid=16, margin=0)
  icons = [tok.quantise(SVG.format(box="0 0 16 16", d="M1 1h2v2Z")) for _ in range(3)]
  seg = train_segments(tok, icons, num_merges=1, min_count=2)
  (a, b), = seg.merges
  assert [tok.token_name(t) for t in a + b] == ["<M>", "P_1", "P_1", "<h>", "d_2"]
  ids = seg.encode_quantised(icons[0])
  assert [seg.token_name(t) for t in ids] == [
      "<path>", "[<M> P_1 P_1 <h> d_2]", "<v>", "d_2", "<z>"]
  many = train_segments(tok, icons, num_merges=20, min_count=2)
  for s in many.segments:
    assert len(units_of(tok, list(s))) >= 1
  assert many.encode_quantised(icons[0]) == [PATH, many.vocab_size - 1]
  assert many.decode(many.encode_quantised(icons[0])).paths == icons[0].paths


def test_to_svg_reparses_to_the_same_icon():
  icon = parse_svg(SVG.format(box="0 0 10 10", d="M1 2h3c1 0 2 1 2 2z"))
  again = parse_svg(to_svg(icon, "{:.17g}"))
  assert again == icon
  assert math.isclose(again.view_box[2], 10)

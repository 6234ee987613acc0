"""HiVG tokens: structure tokens, command tokens, quantised coordinates and learned segments.

Atomic level (HiVG §3.1; its released tokenizer's layout): an icon normalised to a
``grid`` (parser.normalise: its viewBox becomes [0, grid]^2) is quantised to integers in
[-margin, grid + margin] (clamped: control points may leave the viewBox), and every path becomes

    <path>  <M> P_x P_y  <c> d_dx1 d_dy1 d_dx2 d_dy2 d_dx d_dy  <l> d_dx d_dy  <h> d_dx  <z> ...

``M`` is absolute (``P_-margin .. P_grid+margin``); every other command is relative to the
*quantised* cursor (``d_-span .. d_span``, span = grid + 2 margin), so the round trip is exact
on the quantised icon and each coordinate is within 0.5 grid units of the normalised one (half
a quantisation step; more only where it was clamped). A line whose quantised dy (dx) is 0 is written
``h`` (``v``); lines and cubics that do not move the quantised cursor are dropped (they draw
nothing). x and y share the coordinate tokens: the axis follows from the position.

Segment level ("structure segment learning", HiVG Eq. 2-3): the unit is one command with all of
its coordinate tokens, never a part of one. Training is greedy: at each step either one unit
becomes a token (it binds a command and its coordinates: ``<v> d_-8`` -> one id) or two
adjacent symbols merge into one token, whichever saves more tokens on the training icons, among
those seen at least ``min_count`` times (HiVG's f_min). Encoding replays the pair merges by
rank (standard BPE), then writes each symbol as its token, or as its atomic tokens when it has
none. ``<path>`` is a boundary. Decoding expands segments back to atomic tokens.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import heapq

import numpy as np

from jaxtok.tokenizers.svg.parser import Command, Icon, Path, normalise, parse_svg

PAD, BOS, EOS, PATH = 0, 1, 2, 3
OPS = ("M", "L", "H", "V", "C", "Z")  # emitted commands: M absolute, the others relative
_CMD0 = 4
_ARITY = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "Z": 0}


class TokenError(ValueError):
  """A token sequence that is not a well-formed HiVG icon (the message says where)."""


@dataclasses.dataclass(frozen=True)
class Quantised:
  """An icon on the integer grid: paths of (op, int coords) in canonical ``M L C Z``."""

  grid: int
  margin: int
  paths: tuple[tuple[tuple[str, tuple[int, ...]], ...], ...]
  clamped: int = 0  # coordinates that fell outside [-margin, grid + margin] before rounding
  kept: tuple[tuple[int, ...], ...] = ()  # per path, the source command index of each command

  def icon(self) -> Icon:
    return Icon((0.0, 0.0, float(self.grid), float(self.grid)), tuple(
        Path(tuple(Command(op, tuple(float(v) for v in a)) for op, a in p)) for p in self.paths))


def quantise(icon: Icon, grid: int, margin: int = 0) -> Quantised:
  """Rounds a normalised icon's coordinates into [-margin, grid + margin]; drops commands that
  do not move the quantised cursor."""
  paths, kept, clamped = [], [], 0
  for path in icon.paths:
    out, src, cur, start = [], [], None, None
    for j, c in enumerate(path.commands):
      raw = np.asarray(c.args, np.float64)
      clamped += int(np.sum((raw < -margin) | (raw > grid + margin)))
      q = tuple(int(v) for v in np.rint(np.clip(raw, -margin, grid + margin)))
      if c.op == "M":
        cur = start = q
      elif c.op == "Z":
        cur = start
      elif all(q[i:i + 2] == cur for i in range(0, len(q), 2)):
        continue  # a zero-length line or a cubic collapsed onto its start: draws nothing
      else:
        cur = q[-2:]
      out.append((c.op, q))
      src.append(j)
    paths.append(tuple(out))
    kept.append(tuple(src))
  return Quantised(grid, margin, tuple(paths), clamped, tuple(kept))


@dataclasses.dataclass(frozen=True)
class HiVGTokenizer:
  """Atomic HiVG tokens on a ``grid`` (+ ``margin``) plus learned segments (``merges``: (a, b)
  atomic-token tuples in rank order; ``b == ()`` makes the single unit ``a`` a token)."""

  grid: int = 128
  margin: int = 16
  merges: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()

  # -- vocabulary ------------------------------------------------------------------------------

  @property
  def p0(self) -> int:  # id of P_0
    return _CMD0 + len(OPS)

  @property
  def span(self) -> int:  # the largest |delta| on the grid
    return self.grid + 2 * self.margin

  @property
  def d0(self) -> int:  # id of d_0 (d_k = d0 + k)
    return self.p0 + self.span + 1 + self.span

  @property
  def atomic_size(self) -> int:
    return self.p0 + 3 * self.span + 2

  @functools.cached_property
  def segments(self) -> tuple[tuple[int, ...], ...]:
    """The atomic tokens of each segment id ``atomic_size + i``."""
    return tuple(a + b for a, b in self.merges)

  @functools.cached_property
  def _segment_id(self) -> dict[tuple[int, ...], int]:
    return {s: self.atomic_size + i for i, s in enumerate(self.segments)}

  @functools.cached_property
  def _rank(self) -> dict[tuple[tuple[int, ...], tuple[int, ...]], int]:
    return {m: r for r, m in enumerate(self.merges) if m[1]}

  @property
  def vocab_size(self) -> int:
    return self.atomic_size + len(self.merges)

  def token_name(self, t: int) -> str:
    if t < _CMD0:
      return ("<pad>", "<bos>", "<eos>", "<path>")[t]
    if t < self.p0:
      op = OPS[t - _CMD0]
      return f"<{op if op == 'M' else op.lower()}>"
    if t < self.p0 + self.span + 1:
      return f"P_{t - self.p0 - self.margin}"
    if t < self.atomic_size:
      return f"d_{t - self.d0}"
    return "[" + " ".join(self.token_name(a) for a in self.segments[t - self.atomic_size]) + "]"

  def _p(self, v: int) -> int:
    return self.p0 + self.margin + v

  def _d(self, v: int) -> int:
    return self.d0 + v

  # -- atomic level ----------------------------------------------------------------------------

  def units(self, q: Quantised) -> list[list[tuple[int, ...]]]:
    """Per path, its command units: each a tuple (command token, coordinate tokens...)."""
    out = []
    for path in q.paths:
      units, cur, start = [], (0, 0), (0, 0)
      for op, a in path:
        if op == "M":
          units.append((_CMD0, self._p(a[0]), self._p(a[1])))
          cur = start = a
        elif op == "Z":
          units.append((_CMD0 + OPS.index("Z"),))
          cur = start
        elif op == "L":
          dx, dy = a[0] - cur[0], a[1] - cur[1]
          if dy == 0:
            units.append((_CMD0 + OPS.index("H"), self._d(dx)))
          elif dx == 0:
            units.append((_CMD0 + OPS.index("V"), self._d(dy)))
          else:
            units.append((_CMD0 + OPS.index("L"), self._d(dx), self._d(dy)))
          cur = a
        else:  # C, relative to the start of the curve
          units.append((_CMD0 + OPS.index("C"),
                        *(self._d(v - cur[i % 2]) for i, v in enumerate(a))))
          cur = a[-2:]
      out.append(units)
    return out

  def encode_atomic(self, q: Quantised) -> list[int]:
    return [t for units in self.units(q) for t in (PATH, *[x for u in units for x in u])]

  # -- segment level ---------------------------------------------------------------------------

  def _segment(self, units: list[tuple[int, ...]]) -> list[int]:
    syms = list(units)
    while len(syms) > 1:
      ranks = [self._rank.get((a, b)) for a, b in zip(syms, syms[1:])]
      best = min((r for r in ranks if r is not None), default=None)
      if best is None:
        break
      pair, merged, i = self.merges[best], [], 0
      while i < len(syms):
        if i + 1 < len(syms) and (syms[i], syms[i + 1]) == pair:
          merged.append(syms[i] + syms[i + 1])
          i += 2
        else:
          merged.append(syms[i])
          i += 1
      syms = merged
    out = []
    for s in syms:
      out.extend([self._segment_id[s]] if s in self._segment_id else s)
    return out

  def encode_quantised(self, q: Quantised) -> list[int]:
    """The HiVG tokens of a quantised icon (no BOS/EOS)."""
    return [t for units in self.units(q) for t in (PATH, *self._segment(units))]

  def encode(self, svg: str | Icon) -> list[int]:
    """The HiVG tokens of an SVG document (or a parsed, not yet normalised :class:`Icon`)."""
    return self.encode_quantised(self.quantise(svg))

  def quantise(self, svg: str | Icon) -> Quantised:
    icon = parse_svg(svg) if isinstance(svg, str) else svg
    return quantise(normalise(icon, self.grid), self.grid, self.margin)

  # -- decoding --------------------------------------------------------------------------------

  def expand(self, ids) -> list[int]:
    """Segments replaced by their atomic tokens; BOS, EOS and PAD dropped."""
    out = []
    for t in map(int, ids):
      if t in (PAD, BOS, EOS):
        continue
      if not 0 <= t < self.vocab_size:
        raise TokenError(f"token id {t} is outside the vocabulary [0, {self.vocab_size})")
      out.extend(self.segments[t - self.atomic_size] if t >= self.atomic_size else (t,))
    return out

  def decode(self, ids) -> Quantised:
    """The quantised icon of HiVG tokens; raises :class:`TokenError` naming the first flaw."""
    atoms = self.expand(ids)
    paths: list[list] = []
    cur = start = None
    i = 0
    while i < len(atoms):
      t = atoms[i]
      if t == PATH:
        paths.append([])
        i += 1
        continue
      if not _CMD0 <= t < self.p0:
        raise TokenError(f"atomic token {i} is {self.token_name(t)}, expected a command or <path>")
      if not paths:
        raise TokenError("the tokens must start with <path>")
      op = OPS[t - _CMD0]
      n = _ARITY[op]
      args = atoms[i + 1:i + 1 + n]
      lo, hi = (self.p0, self.p0 + self.span + 1) if op == "M" else (self.d0 - self.span,
                                                                     self.atomic_size)
      if len(args) < n or not all(lo <= a < hi for a in args):
        want = "absolute P_" if op == "M" else "relative d_"
        got = " ".join(self.token_name(a) for a in args) or "the end"
        raise TokenError(f"command {self.token_name(t)} at atomic token {i} takes {n} {want} "
                         f"coordinates, got {got}")
      if op != "M" and cur is None:
        raise TokenError(f"{self.token_name(t)} at atomic token {i} before any <M>")
      if op == "M":
        cur = start = (args[0] - self.p0 - self.margin, args[1] - self.p0 - self.margin)
        paths[-1].append(("M", cur))
      elif op == "Z":
        paths[-1].append(("Z", ()))
        cur = start
      else:
        d = [a - self.d0 for a in args]
        if op == "H":
          d = [d[0], 0]
        elif op == "V":
          d = [0, d[0]]
        pts = tuple(v + cur[k % 2] for k, v in enumerate(d))
        if not all(-self.margin <= v <= self.grid + self.margin for v in pts):
          raise TokenError(f"{self.token_name(t)} at atomic token {i} leaves the grid: {pts}")
        paths[-1].append(("L" if op in "LHV" else "C", pts))
        cur = pts[-2:]
      i += 1 + n
    return Quantised(self.grid, self.margin, tuple(tuple(p) for p in paths))

  def decode_prefix(self, ids) -> tuple[Quantised, bool]:
    """(the icon of the longest well-formed prefix of ``ids`` up to EOS, whether all of it
    was well formed): for sampled sequences."""
    ids = [int(t) for t in ids]
    if EOS in ids:
      ids = ids[:ids.index(EOS)]
    try:
      return self.decode(ids), True
    except TokenError:
      pass
    lo, hi = 0, len(ids)  # the longest decodable prefix, by bisection on the id count
    while lo < hi:
      mid = (lo + hi + 1) // 2
      try:
        self.decode(ids[:mid])
        lo = mid
      except TokenError:
        hi = mid - 1
    return self.decode(ids[:lo]), False


def train_segments(tokenizer: HiVGTokenizer, icons: list[Quantised], num_merges: int,
                   min_count: int = 2) -> HiVGTokenizer:
  """``tokenizer`` with up to ``num_merges`` segments learned greedily on ``icons`` (module
  docstring): each step takes, among the units and adjacent pairs seen at least ``min_count``
  times, the one that saves the most tokens."""
  if num_merges < 0 or min_count < 1:
    raise ValueError(f"num_merges must be >= 0 and min_count >= 1; got {num_merges}, {min_count}")
  syms: list[tuple[int, ...]] = []
  index: dict[tuple[int, ...], int] = {}

  def intern(s):
    if s not in index:
      index[s] = len(syms)
      syms.append(s)
    return index[s]

  seqs = [[intern(u) for u in units] for q in icons for units in tokenizer.units(q)]
  is_token: set[int] = set()
  merges = []
  counts = collections.Counter(k for seq in seqs for k in seq)  # symbol occurrences
  pairs = collections.Counter(p for seq in seqs for p in zip(seq, seq[1:]))
  holders = collections.defaultdict(set)  # symbol -> the sequences holding it
  for n, seq in enumerate(seqs):
    for k in seq:
      holders[k].add(n)

  def cost(k):
    return 1 if k in is_token else len(syms[k])

  def gain(key):  # tokens saved on the training icons by making ``key`` one token
    if isinstance(key, int):
      n = counts[key]
      return 0 if key in is_token or n < min_count else n * (cost(key) - 1)
    n = pairs[key]
    return 0 if n < min_count else n * (cost(key[0]) + cost(key[1]) - 1)

  # A lazy max-heap of gains: an entry is re-checked when popped; every count that grows pushes
  # a fresh entry, so the first entry whose stored gain is current is the best one.
  heap = [(-g, k if isinstance(k, int) else -1, k) for k in [*counts, *pairs] if (g := gain(k))]
  heapq.heapify(heap)

  def push(key):
    g = gain(key)
    if g > 0:
      heapq.heappush(heap, (-g, key if isinstance(key, int) else -1, key))

  for _ in range(num_merges):
    best = None
    while heap:
      g, _, key = heapq.heappop(heap)
      if -g == gain(key):  # pushed gains are > 0
        best = key
        break
      push(key)
    if best is None:
      break
    if isinstance(best, int):
      is_token.add(best)
      merges.append((syms[best], ()))
      continue
    pair = best
    a, b = pair
    new = intern(syms[a] + syms[b])
    is_token.add(new)
    merges.append((syms[a], syms[b]))
    for n in sorted(holders[a] & holders[b]):
      seq = seqs[n]
      out, i = [], 0
      while i < len(seq):
        if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
          out.append(new)
          i += 2
        else:
          out.append(seq[i])
          i += 1
      if len(out) == len(seq):
        continue
      counts.subtract(seq)
      pairs.subtract(zip(seq, seq[1:]))
      counts.update(out)
      pairs.update(zip(out, out[1:]))
      for k in set(seq) - set(out):
        holders[k].discard(n)
      for k in out:
        holders[k].add(n)
      for k in {*out, *zip(out, out[1:])}:
        push(k)
      seqs[n] = out
  return dataclasses.replace(tokenizer, merges=tuple(merges))


def max_coordinate_error(normalised: Icon, q: Quantised) -> float:
  """The largest |normalised - quantised| coordinate over the commands ``q`` kept (grid units):
  at most 0.5 when ``q.clamped == 0``."""
  worst = 0.0
  for path, qpath, src in zip(normalised.paths, q.paths, q.kept, strict=True):
    for (_, args), j in zip(qpath, src, strict=True):
      worst = max([worst, *(abs(v - w) for v, w in zip(path.commands[j].args, args, strict=True))])
  return worst


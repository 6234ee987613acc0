"""SVG -> a hierarchy (icon -> paths -> commands -> coordinates) in one canonical command set.

The first level of HiVG ("Hierarchical SVG Tokenization", Xing et al., 2026): an SVG document
becomes an :class:`Icon` (its viewBox) holding :class:`Path` s (one per ``<path>`` element, in
document order), each a tuple of :class:`Command` s with absolute coordinates. Every path-data
command of SVG 1.1 (``M L H V C S Q T A Z``, absolute and relative) is rewritten into four
absolute ones:

* ``M x y`` and ``L x y``; ``H`` / ``V`` become ``L`` (the other coordinate is the cursor's);
* ``C x1 y1 x2 y2 x y``; ``S`` gets its reflected first control point; a quadratic ``Q`` / ``T``
  is degree-elevated to the exactly equal cubic (controls p0 + 2/3 (q - p0), p + 2/3 (q - p));
* ``A`` is cut into arcs of at most 90 degrees, each approximated by the cubic of control length
  4/3 tan(theta / 4) (SVG 1.1 F.6.5 endpoint -> centre conversion; radii scaled up when too
  small). Its radial error is at most 2.73e-4 r on a circle of radius r;
* ``Z``; after it the cursor returns to the subpath's start.

Malformed input raises :class:`SVGError` naming what is wrong: bad XML, a root that is not
``<svg>``, a missing or bad viewBox, an unsupported shape element or transform, an unknown path
command, a wrong number of arguments, a path that does not start with a moveto.
"""

from __future__ import annotations

import dataclasses
import math
import re
import xml.etree.ElementTree as ET

ARITY = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "A": 7, "Z": 0}
CANONICAL = ("M", "L", "C", "Z")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SEPARATORS = " \t\r\n,"
_SHAPES = ("rect", "circle", "ellipse", "line", "polyline", "polygon", "use", "text", "image")


class SVGError(ValueError):
  """Malformed or unsupported SVG input; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class Command:
  """One canonical command: ``op`` in ``CANONICAL``, absolute ``args`` (2, 2, 6 or 0 numbers)."""

  op: str
  args: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Path:
  commands: tuple[Command, ...]


@dataclasses.dataclass(frozen=True)
class Icon:
  view_box: tuple[float, float, float, float]  # min-x, min-y, width, height
  paths: tuple[Path, ...]


def _local(tag: str) -> str:
  return tag.rsplit("}", 1)[-1]


def read_path_data(d: str) -> list[tuple[str, list[float]]]:
  """The commands of a path's ``d`` as written: [(letter, args)], one entry per command
  repetition (``l1 2 3 4`` gives two ``l``; extra pairs after ``M``/``m`` are ``L``/``l``)."""
  out: list[tuple[str, list[float]]] = []
  i, n = 0, len(d)
  while True:
    while i < n and d[i] in _SEPARATORS:
      i += 1
    if i >= n:
      return out
    letter, start = d[i], i
    if letter.upper() not in ARITY:
      kind = "unknown path command" if letter.isalpha() else "unexpected character"
      raise SVGError(f"{kind} {letter!r} at offset {i} of path data {_clip(d)!r}; valid "
                     f"commands: {' '.join(ARITY)} (and lower case)")
    if not out and letter not in "Mm":
      raise SVGError(f"path data must start with a moveto (M or m), got {letter!r}: {_clip(d)!r}")
    i += 1
    arity, args = ARITY[letter.upper()], []
    while True:
      while i < n and d[i] in _SEPARATORS:
        i += 1
      if i >= n or not (d[i].isdigit() or d[i] in "+-."):
        break
      if letter in "Aa" and len(args) % 7 in (3, 4):  # arc flags: one character, may be packed
        if d[i] not in "01":
          raise SVGError(f"arc flag at offset {i} must be 0 or 1, got {d[i]!r}: {_clip(d)!r}")
        args.append(float(d[i]))
        i += 1
        continue
      m = _NUMBER.match(d, i)
      if m is None:
        raise SVGError(f"bad number at offset {i} of path data {_clip(d)!r}")
      args.append(float(m.group()))
      i = m.end()
    if arity == 0:
      if args:
        raise SVGError(f"path command {letter!r} at offset {start} takes no arguments, got "
                       f"{len(args)}: {_clip(d)!r}")
      out.append((letter, []))
      continue
    if not args or len(args) % arity:
      raise SVGError(f"path command {letter!r} at offset {start} takes {arity} arguments (or a "
                     f"multiple of {arity}), got {len(args)}: {_clip(d)!r}")
    for k in range(0, len(args), arity):
      repeat = letter if k == 0 or letter not in "Mm" else ("L" if letter == "M" else "l")
      out.append((repeat, args[k:k + arity]))


def _clip(d: str, width: int = 60) -> str:
  return d if len(d) <= width else d[:width] + "..."


def arc_to_cubics(p1, rx, ry, phi_deg, large, sweep, p2) -> list[Command]:
  """The cubics approximating the SVG arc from ``p1`` to ``p2`` (SVG 1.1 F.6.5-F.6.6)."""
  (x1, y1), (x2, y2) = p1, p2
  if (x1, y1) == (x2, y2):
    return []
  rx, ry = abs(rx), abs(ry)
  if rx == 0 or ry == 0:
    return [Command("L", (x2, y2))]
  phi = math.radians(phi_deg % 360.0)
  c, s = math.cos(phi), math.sin(phi)
  dx, dy = (x1 - x2) / 2, (y1 - y2) / 2
  xp, yp = c * dx + s * dy, -s * dx + c * dy
  lam = (xp / rx) ** 2 + (yp / ry) ** 2
  if lam > 1:
    rx, ry = rx * math.sqrt(lam), ry * math.sqrt(lam)
  num = rx * rx * ry * ry - rx * rx * yp * yp - ry * ry * xp * xp
  den = rx * rx * yp * yp + ry * ry * xp * xp
  coef = math.sqrt(max(0.0, num / den)) * (-1 if large == sweep else 1)
  cxp, cyp = coef * rx * yp / ry, -coef * ry * xp / rx
  cx, cy = c * cxp - s * cyp + (x1 + x2) / 2, s * cxp + c * cyp + (y1 + y2) / 2

  def angle(ux, uy, vx, vy):
    return math.atan2(ux * vy - uy * vx, ux * vx + uy * vy)

  ux, uy = (xp - cxp) / rx, (yp - cyp) / ry
  theta = angle(1.0, 0.0, ux, uy)
  delta = angle(ux, uy, (-xp - cxp) / rx, (-yp - cyp) / ry)
  if not sweep and delta > 0:
    delta -= 2 * math.pi
  elif sweep and delta < 0:
    delta += 2 * math.pi
  pieces = max(1, math.ceil(abs(delta) / (math.pi / 2) - 1e-9))
  step = delta / pieces
  k = 4.0 / 3.0 * math.tan(step / 4)

  def point(u, v):  # unit-circle coordinates -> user space
    return cx + rx * c * u - ry * s * v, cy + rx * s * u + ry * c * v

  out = []
  for i in range(pieces):
    t0, t1 = theta + i * step, theta + (i + 1) * step
    a = point(math.cos(t0) - k * math.sin(t0), math.sin(t0) + k * math.cos(t0))
    b = point(math.cos(t1) + k * math.sin(t1), math.sin(t1) - k * math.cos(t1))
    end = (x2, y2) if i == pieces - 1 else point(math.cos(t1), math.sin(t1))
    out.append(Command("C", (*a, *b, *end)))
  return out


def canonical_commands(raw: list[tuple[str, list[float]]]) -> tuple[Command, ...]:
  """:func:`read_path_data`'s commands rewritten as absolute ``M L C Z`` (module docstring)."""
  out: list[Command] = []
  x = y = sx = sy = 0.0
  last_ctrl: tuple[float, float] | None = None  # the previous C/S control, for S reflection
  last_quad: tuple[float, float] | None = None  # the previous Q/T control, for T reflection
  for letter, a in raw:
    op, rel = letter.upper(), letter.islower()
    ox, oy = (x, y) if rel else (0.0, 0.0)
    ctrl, quad = None, None
    if op == "M":
      x, y = a[0] + ox, a[1] + oy
      sx, sy = x, y
      out.append(Command("M", (x, y)))
    elif op in "LHV":
      nx = x if op == "V" else (a[0] + ox if op == "L" else a[0] + (x if rel else 0.0))
      ny = y if op == "H" else (a[-1] + (y if rel else 0.0) if op == "V" else a[1] + oy)
      x, y = nx, ny
      out.append(Command("L", (x, y)))
    elif op in "CS":
      if op == "C":
        c1 = (a[0] + ox, a[1] + oy)
        rest = a[2:]
      else:
        c1 = (2 * x - last_ctrl[0], 2 * y - last_ctrl[1]) if last_ctrl else (x, y)
        rest = a
      c2, end = (rest[0] + ox, rest[1] + oy), (rest[2] + ox, rest[3] + oy)
      out.append(Command("C", (*c1, *c2, *end)))
      ctrl, (x, y) = c2, end
    elif op in "QT":
      if op == "Q":
        q, end = (a[0] + ox, a[1] + oy), (a[2] + ox, a[3] + oy)
      else:
        q = (2 * x - last_quad[0], 2 * y - last_quad[1]) if last_quad else (x, y)
        end = (a[0] + ox, a[1] + oy)
      c1 = (x + 2 / 3 * (q[0] - x), y + 2 / 3 * (q[1] - y))
      c2 = (end[0] + 2 / 3 * (q[0] - end[0]), end[1] + 2 / 3 * (q[1] - end[1]))
      out.append(Command("C", (*c1, *c2, *end)))
      quad, (x, y) = q, end
    elif op == "A":
      end = (a[5] + ox, a[6] + oy)
      out.extend(arc_to_cubics((x, y), a[0], a[1], a[2], a[3] != 0, a[4] != 0, end))
      x, y = end
    else:  # Z
      out.append(Command("Z"))
      x, y = sx, sy
    last_ctrl, last_quad = ctrl, quad
  return tuple(out)


def _view_box(root) -> tuple[float, float, float, float]:
  text = root.get("viewBox")
  if text is None:
    w, h = root.get("width"), root.get("height")
    if w is None or h is None:
      raise SVGError("the <svg> root needs a viewBox (or width and height)")
    text = f"0 0 {w} {h}"
  try:
    box = tuple(float(v) for v in re.split(r"[\s,]+", text.strip().removesuffix("px")))
  except ValueError:
    raise SVGError(f"bad viewBox {text!r}: want four numbers 'min-x min-y width height'") from None
  if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
    raise SVGError(f"bad viewBox {text!r}: want four numbers with positive width and height")
  return box


def parse_svg(text: str) -> Icon:
  """The :class:`Icon` of an SVG document: every ``<path>``'s commands in canonical form."""
  try:
    root = ET.fromstring(text)
  except ET.ParseError as e:
    raise SVGError(f"bad XML: {e}") from None
  if _local(root.tag) != "svg":
    raise SVGError(f"the root element must be <svg>, got <{_local(root.tag)}>")
  box = _view_box(root)
  paths = []
  for el in root.iter():
    tag = _local(el.tag)
    if tag in _SHAPES:
      raise SVGError(f"unsupported element <{tag}>: only <path> geometry is read")
    if el.get("transform") is not None:
      raise SVGError(f"<{tag}> has a transform ({el.get('transform')!r}); bake transforms "
                     "into the path data first")
    if tag == "path":
      d = el.get("d")
      if d is None:
        raise SVGError("a <path> without a 'd' attribute")
      commands = canonical_commands(read_path_data(d))
      if commands:
        paths.append(Path(commands))
  if not paths:
    raise SVGError("no <path> with path data in the document")
  return Icon(box, tuple(paths))


def normalise(icon: Icon, grid: int) -> Icon:
  """``icon`` scaled by grid / max(width, height), its viewBox centred in [0, grid]^2."""
  x0, y0, w, h = icon.view_box
  s = grid / max(w, h)
  tx, ty = (grid - w * s) / 2 - x0 * s, (grid - h * s) / 2 - y0 * s

  def move(c: Command) -> Command:
    return Command(c.op, tuple(v * s + (tx if i % 2 == 0 else ty) for i, v in enumerate(c.args)))

  return Icon((0.0, 0.0, float(grid), float(grid)),
              tuple(Path(tuple(move(c) for c in p.commands)) for p in icon.paths))


def path_data(commands, fmt: str = "{:g}") -> str:
  """Absolute path data ``'M1 2L3 4Z'`` of canonical commands."""
  return "".join(c.op + " ".join(fmt.format(v) for v in c.args) for c in commands)


def to_svg(icon: Icon, fmt: str = "{:g}") -> str:
  """A minimal SVG document of ``icon`` (one ``<path>`` per path, default fill)."""
  x0, y0, w, h = icon.view_box
  body = "".join(f'<path d="{path_data(p.commands, fmt)}"/>' for p in icon.paths)
  return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{x0:g} {y0:g} {w:g} {h:g}">'
          f"{body}</svg>")

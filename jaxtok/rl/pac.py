"""PAC prediction sets over programs: partial programs whose holes are uncertain AST subtrees.

"PAC Prediction Sets for Large Language Models of Code" (Khakhar, Mell & Bastani, 2023) turns a
code model's proposal into a partial program -- the proposal with some AST subtrees replaced by
holes -- and calibrates how much to remove so that the true program lies in the set (matches
the partial program outside its holes) with probability >= 1 - eps, with confidence 1 - delta
over the calibration draw.

Calibration (model-free): Park et al. (2020), "PAC Confidence Sets for Deep Neural Networks via
Calibrated Prediction". With n calibration examples, let k* be the largest k with
BinomCDF(k; n, eps) <= delta. For a nested family of sets indexed by tau, choosing the tau with
at most k* calibration errors gives P(coverage < 1 - eps) <= delta: coverage below 1 - eps
would make k* or fewer errors out of n a tail event of probability <= delta.

Sets over programs (the threshold version; the paper instead solves an integer program that
removes the fewest nodes under a budget on the kept nodes' negative log-likelihood and a bound
m on the number of holes -- not implemented here). Each token belongs to the smallest AST node
whose span contains it (whitespace-only tokens -- newlines, indents -- to the outermost node
starting where the next token starts: they decide where the next construct goes). A node's
score is the minimum confidence of the tokens it owns (a node owning none, such as an ``Expr``
around a call, takes its children's maximum: it goes once they all have); a node scoring below
tau becomes a hole, which replaces its whole subtree, so holes are expressions, statements,
arguments -- never arbitrary token spans.
Why the minimum: it makes "every kept token has confidence >= tau" an invariant, so the holes
at tau' > tau contain those at tau (the family is nested, which the PAC argument needs) and a
token is kept iff its *level* -- the least score on its chain of enclosing nodes -- is >= tau.
The true program is in the set iff every kept token is correct, i.e. iff tau exceeds its
*cover level*, the greatest level among its wrong tokens (-inf when none is wrong).
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats

HOLE = "??"


def max_errors(n: int, eps: float, delta: float) -> int:
  """k*: the largest k with BinomCDF(k; n, eps) <= delta, or -1 when even k = 0 is too many."""
  if not (0 < eps < 1 and 0 < delta < 1):
    raise ValueError(f"eps and delta must lie in (0, 1), got eps={eps}, delta={delta}")
  if n < 1:
    raise ValueError(f"need at least one calibration example, got n={n}")
  ok = np.flatnonzero(stats.binom.cdf(np.arange(n + 1), n, eps) <= delta)
  return int(ok[-1]) if ok.size else -1


def pac_threshold(scores: np.ndarray, eps: float, delta: float) -> float:
  """Park et al.'s threshold: example i is covered at tau iff ``scores[i] >= tau``.

  Returns the largest tau whose calibration errors #{scores < tau} are at most k*, i.e. the
  (k* + 1)-th smallest score; -inf (cover everything) when n is too small for (eps, delta).
  """
  scores = np.sort(np.asarray(scores, np.float64))
  k = max_errors(len(scores), eps, delta)
  return -np.inf if k < 0 else float(scores[k])


def naive_threshold(scores: np.ndarray, eps: float) -> float:
  """The non-PAC baseline: the empirical quantile, allowing floor(eps n) calibration errors."""
  scores = np.sort(np.asarray(scores, np.float64))
  return float(scores[int(np.floor(eps * len(scores)))])


def cover_threshold(levels: np.ndarray, eps: float, delta: float | None) -> float:
  """The hole threshold for programs: example i is covered at tau iff ``levels[i] < tau``.

  The smallest such tau (fewest holes) with at most k* calibration errors #{levels >= tau}:
  just above the (k* + 1)-th largest cover level. ``delta=None`` gives the naive quantile.
  """
  neg = -np.asarray(levels, np.float64)
  tau = naive_threshold(neg, eps) if delta is None else pac_threshold(neg, eps, delta)
  return float(np.nextafter(-tau, np.inf))


@dataclasses.dataclass
class Node:
  """An AST node's character span [start, end) (children and owned tokens included)."""

  kind: str
  start: int
  end: int
  parent: int  # index into the node list; -1 for the root
  children: list[int] = dataclasses.field(default_factory=list)


def parse_nodes(program: str) -> list[Node]:
  """The positioned AST nodes of ``program``, parents before children; node 0 is the module.

  f-string internals are not nodes (their positions are unreliable before Python 3.12).
  """
  tree = ast.parse(program)
  line_starts = [0]
  for line in program.splitlines(keepends=True):
    line_starts.append(line_starts[-1] + len(line))

  def offset(line: int, col_bytes: int) -> int:  # ast columns are UTF-8 byte offsets
    text = program[line_starts[line - 1]:line_starts[line]]
    return line_starts[line - 1] + len(text.encode()[:col_bytes].decode("utf-8", "replace"))

  nodes = [Node("Module", 0, len(program), -1)]

  def visit(node: ast.AST, parent: int) -> None:
    if getattr(node, "end_lineno", None) is not None:
      start = offset(node.lineno, node.col_offset)
      end = offset(node.end_lineno, node.end_col_offset)
      nodes.append(Node(type(node).__name__, start, end, parent))
      nodes[parent].children.append(len(nodes) - 1)
      parent = len(nodes) - 1
    if isinstance(node, ast.JoinedStr):
      return
    for child in ast.iter_child_nodes(node):
      visit(child, parent)

  for child in ast.iter_child_nodes(tree):
    visit(child, 0)
  for i in range(len(nodes) - 1, 0, -1):  # widen parents to cover children (decorators)
    parent = nodes[nodes[i].parent]
    parent.start, parent.end = min(parent.start, nodes[i].start), max(parent.end, nodes[i].end)
  for node in nodes:
    node.children.sort(key=lambda c: nodes[c].start)
  return nodes


def token_owners(program: str, nodes: list[Node], spans: np.ndarray) -> np.ndarray:
  """Index of the node owning each token (spans int [T, 2] of character offsets).

  A token belongs to the smallest node holding all of its non-blank text; a whitespace-only token
  (newline and indent, a space before a digit) to the outermost node that starts where the next
  token's text starts -- the statement or expression whose placement it decides.
  """
  owners = np.zeros(len(spans), np.int64)
  pending = []  # whitespace-only tokens waiting for the next real token
  for t, (a, b) in enumerate(np.asarray(spans)):
    text = program[a:b]
    if not text.strip():
      pending.append(t)
      continue
    a, b = a + len(text) - len(text.lstrip()), b - len(text) + len(text.rstrip())
    path = [0]
    while True:
      inner = [c for c in nodes[path[-1]].children
               if nodes[c].start <= a and b <= nodes[c].end]
      if not inner:
        break
      path.append(inner[-1])
    owners[t] = path[-1]
    owners[pending] = next((n for n in path if nodes[n].start == a), path[-1])
    pending = []
  return owners  # trailing whitespace stays with the module


def node_scores(nodes: list[Node], owners: np.ndarray, confidence: np.ndarray,
                start: int = 0) -> np.ndarray:
  """Per node: the minimum confidence of the tokens it owns.

  A node owning no token (an ``Expr`` around a call) takes its children's maximum, so it is a
  hole once all its children are -- unless it begins before ``start``, in the given text (a
  ``FunctionDef`` whose signature was the prompt): such a node, like a leaf owning no token,
  scores +inf and is never a hole.
  """
  scores = np.full(len(nodes), np.inf)
  np.minimum.at(scores, owners, np.asarray(confidence, np.float64))
  owns = np.zeros(len(nodes), bool)
  owns[owners] = True
  for i in range(len(nodes) - 1, -1, -1):  # children come after their parents
    if not owns[i] and nodes[i].children and nodes[i].start >= start:
      scores[i] = max(scores[c] for c in nodes[i].children)
  return scores


def chain_minimum(nodes: list[Node], scores: np.ndarray) -> np.ndarray:
  """Per node: the least score on its chain of ancestors (itself included)."""
  out = np.array(scores, np.float64)
  for i in range(1, len(nodes)):  # parents come before children
    out[i] = min(out[i], out[nodes[i].parent])
  return out


@dataclasses.dataclass(frozen=True)
class ProgramScores:
  """What calibration needs from one program: per-token levels and nodes, and the cover level."""

  levels: np.ndarray  # float [T]: a token is kept iff level >= tau
  correct: np.ndarray  # bool [T]: the proposal's token equals the true one
  node_levels: np.ndarray  # float [N]: a scored node is in a hole iff its chain minimum < tau

  @property
  def cover_level(self) -> float:
    wrong = self.levels[~self.correct]
    return float(wrong.max()) if wrong.size else -np.inf

  def kept_tokens(self, tau: float) -> float:
    return float(np.mean(self.levels >= tau))

  def kept_nodes(self, tau: float) -> float:
    return float(np.mean(self.node_levels >= tau)) if self.node_levels.size else 1.0


def score_program(program: str, spans: np.ndarray, confidence: np.ndarray,
                  correct: np.ndarray) -> ProgramScores:
  """Levels of the scored tokens (``spans``, the proposal) and of the nodes that begin at or
  after the first of them (what precedes it, such as a function's signature, was given)."""
  nodes = parse_nodes(program)
  owners = token_owners(program, nodes, spans)
  start = _first(spans)
  node_levels = chain_minimum(nodes, node_scores(nodes, owners, confidence, start))
  scored = [i for i in range(1, len(nodes)) if nodes[i].start >= start]
  return ProgramScores(node_levels[owners], np.asarray(correct, bool), node_levels[scored])


def _first(spans: np.ndarray) -> int:
  spans = np.asarray(spans)
  return int(spans[:, 0].min()) if len(spans) else 0


def body_start(function: str) -> int:
  """Offset of the newline that ends a function's signature (its body is the proposal)."""
  tree = ast.parse(function)
  if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef,
                                                          ast.AsyncFunctionDef)):
    raise ValueError("expected the source of exactly one function")
  first = tree.body[0].body[0].lineno
  return sum(len(line) for line in function.splitlines(keepends=True)[:first - 1]) - 1


def in_set(levels: np.ndarray, correct: np.ndarray, tau: float) -> bool:
  """Whether the true program matches the partial program outside its holes at ``tau``."""
  return bool(np.all(np.asarray(correct)[np.asarray(levels) >= tau]))


def holes(nodes: list[Node], scores: np.ndarray, tau: float) -> list[int]:
  """The outermost nodes whose own score is below ``tau`` (each replaces its subtree)."""
  out, stack = [], [0]
  while stack:
    i = stack.pop()
    if scores[i] < tau:
      out.append(i)
    else:
      stack.extend(nodes[i].children)
  return sorted(out, key=lambda i: nodes[i].start)


def partial_program(program: str, spans: np.ndarray, confidence: np.ndarray, tau: float,
                    hole: str = HOLE) -> str:
  """``program`` with the span of each hole at ``tau`` replaced by ``hole``.

  Whitespace owned by a hole (the newline and indent before a holed statement) is shown as it
  is: it counts as removed for coverage and kept fractions, and layout inside a line does not
  change the program's AST.
  """
  nodes = parse_nodes(program)
  owners = token_owners(program, nodes, spans)
  pieces, cursor = [], 0
  for i in holes(nodes, node_scores(nodes, owners, confidence, _first(spans)), tau):
    pieces += [program[cursor:nodes[i].start], hole]
    cursor = nodes[i].end
  return "".join(pieces) + program[cursor:]


def resample_coverage(cover_levels: np.ndarray, num_calibration: int, eps: float,
                      delta: float | None, num_resamples: int, seed: int = 0,
                      protocol: str = "bootstrap") -> tuple[np.ndarray, np.ndarray]:
  """(tau, coverage) over repeated calibration draws from a pool of examples.

  ``protocol='bootstrap'``: the pool is the population; each calibration set is drawn from it
  with replacement (i.i.d., as the guarantee assumes) and the coverage is exact -- the fraction
  of the whole pool covered. ``'split'``: a random calibration/test split without replacement;
  the coverage is measured on the test part, so it carries test-sampling noise (a valid method
  then falls short of 1 - delta by roughly that noise).
  """
  if protocol not in ("bootstrap", "split"):
    raise ValueError(f"protocol must be 'bootstrap' or 'split', got {protocol!r}")
  rng = np.random.default_rng(seed)
  cover_levels = np.asarray(cover_levels, np.float64)
  taus, coverage = [], []
  for _ in range(num_resamples):
    if protocol == "bootstrap":
      cal = rng.choice(len(cover_levels), num_calibration, replace=True)
      test = cover_levels
    else:
      order = rng.permutation(len(cover_levels))
      cal, test = order[:num_calibration], cover_levels[order[num_calibration:]]
    tau = cover_threshold(cover_levels[cal], eps, delta)
    taus.append(tau)
    coverage.append(np.mean(test < tau))
  return np.asarray(taus), np.asarray(coverage)


def token_spans(pieces: Sequence[str]) -> np.ndarray:
  """Character spans int [T, 2] of consecutive token strings."""
  ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
  return np.stack([ends - np.asarray([len(p) for p in pieces], np.int64), ends], axis=1)

"""Pictures of token premiums: bars per language, and premium against vocabulary size per script."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

GROUP_COLORS = {"Latin": "#4c72b0", "Cyrillic": "#dd8452", "Arabic": "#55a868", "other": "#c44e52"}


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def premium_bars(path: str, panels: Mapping[str, Mapping[str, float]],
                 groups: Mapping[str, str], *, order: Sequence[str] | None = None,
                 title: str = "") -> None:
  """One bar chart per tokenizer (panels ``{name: {language: premium}}``), bars coloured by
  script group, languages in ``order`` (default: by the first panel's premium), saved as PNG."""
  plt = _pyplot()
  first = next(iter(panels.values()))
  langs = list(order) if order is not None else sorted(first, key=lambda x: first[x])
  fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.2 * len(langs)), 2.1 * len(panels)),
                           sharex=True, squeeze=False)
  for ax, (name, prem) in zip(axes[:, 0], panels.items(), strict=True):
    ax.bar(range(len(langs)), [prem.get(x, float("nan")) for x in langs],
           color=[GROUP_COLORS.get(groups.get(x, "other"), "grey") for x in langs])
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set_ylabel("premium")
    ax.set_title(name, fontsize=9, loc="left")
  axes[-1, 0].set_xticks(range(len(langs)))
  axes[-1, 0].set_xticklabels(langs, rotation=90, fontsize=7)
  handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUP_COLORS.values()]
  axes[0, 0].legend(handles, list(GROUP_COLORS), fontsize=7, ncol=4, loc="upper left")
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def premium_vs_vocab(path: str, panels: Mapping[str, Mapping[int, Mapping[str, float]]],
                     scripts: Mapping[str, str], *, reference: str = "en",
                     title: str = "") -> None:
  """Mean premium per script against vocabulary size (log x), one panel per tokenizer family
  (``{name: {V: {language: premium}}}``, ``reference`` left out); labels give language counts."""
  plt = _pyplot()
  cols = min(2, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
  names = sorted({scripts[x] for c in panels.values() for p in c.values() for x in p
                  if x in scripts and x != reference})
  cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
  colors = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
  for ax, (name, curves) in zip(axes.flat, panels.items()):
    sizes = sorted(curves)
    for script in names:
      langs = [x for x in curves[sizes[0]] if scripts.get(x) == script and x != reference]
      if not langs:
        continue
      ys = [sum(curves[v][x] for x in langs) / len(langs) for v in sizes]
      ax.plot(sizes, ys, marker="o", ms=3, color=colors[script], label=f"{script} ({len(langs)})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(v) for v in sizes], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("mean premium")
    ax.set_title(name, fontsize=9)
    ax.axhline(1.0, color="black", lw=0.6)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  axes.flat[cols - 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)

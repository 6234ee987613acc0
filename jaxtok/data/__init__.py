"""Data sets (local tfds builders for the embedded data, any prepared tfds set) and grain pipelines.

Importing this package registers every data set in ``DATASETS``.
"""

# Importing a data-set module registers it in DATASETS.
from jaxtok.data import (  # noqa: F401
  arithmetic,
  arithmetic_cot,
  digits,
  greedy_source,
  interactions,
  layouts,
  natural_patches,
  python_source,
  running_sums,
  shapes,
  speech,
  sudoku,
  svg_icons,
  tfds_catalog,
)
from jaxtok.data.pipeline import DataIterator, global_batch, make_iterator
from jaxtok.data.registry import DATASETS
from jaxtok.data.sources import MissingDataError, get_spec, open_split
from jaxtok.data.spec import DatasetSpec

__all__ = ["DATASETS", "DataIterator", "DatasetSpec", "MissingDataError", "get_spec",
           "global_batch", "make_iterator", "open_split"]

"""Data sets (local tfds builders for the embedded data, any prepared tfds set) and grain pipelines.

Importing this package registers every data set in ``DATASETS``.
"""

from jaxtok.data.registry import DATASETS

__all__ = ["DATASETS"]

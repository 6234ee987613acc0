"""The ``DATASETS`` table: name -> data-set spec (see ``jaxtok.data.pipeline``)."""

from jaxtok.registry import Registry

DATASETS = Registry("dataset")

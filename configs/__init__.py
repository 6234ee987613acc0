"""Experiment configs: ``get_config(arg)`` per file; shared settings in ``common``."""

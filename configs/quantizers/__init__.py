"""Quantizer studies: one config, the quantizer chosen by argument."""

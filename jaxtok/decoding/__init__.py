"""Speculative decoding: a lossless propose -> verify -> accept engine, verifiers and proposers.

See ``engine.speculative_generate``; proposers in ``proposers`` (draft LM, n-gram prompt lookup,
Token Recycling; VocabTrim's trimmed-head draft in ``vocab_trim``), tree templates in ``trees``,
single-chain verifiers in ``verify`` and multi-draft ones (SpecTr K-SEQ, the optimal acceptance
rate) in ``multidraft``.
"""

"""Text tokenizers and the token-premium study (Arnett et al., 2025).

``trainers``: byte-level BPE, SuperBPE and unigram tokenizers trained with HF ``tokenizers``;
``premiums``: corpus token counts, premiums and the text properties that predict them;
``analysis``: R^2, variance F tests, per-language power laws; ``study``: the paper's experiments
as functions of plain ``{language: [text]}`` dicts; ``plots``: premium bars and premium-vs-size
lines. Nothing here reads a config or imports ``jaxtok.pretrained``: existing tokenizers come in as
``encode`` callables.
"""

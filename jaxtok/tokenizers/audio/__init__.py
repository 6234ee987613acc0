"""Discrete audio tokens (issue #14, "Discrete Audio Tokens: More Than a Survey!", Mousavi et al.
2025): an RVQ codec (acoustic tokens), a k-means tokenizer (semantic tokens), their scores
(mel distance, SI-SNR, bitrate) and a frozen-token probe."""

from jaxtok.tokenizers.audio.codec import AudioCodec
from jaxtok.tokenizers.audio.probe import TokenProbe, fit_probe
from jaxtok.tokenizers.audio.semantic import SemanticTokenizer, frame_features
from jaxtok.tokenizers.audio.spectral import (
  bitrate,
  log_mel,
  mel_distance,
  multiscale_stft_loss,
  si_snr,
  stft_magnitude,
)

__all__ = ["AudioCodec", "SemanticTokenizer", "TokenProbe", "bitrate", "fit_probe",
           "frame_features", "log_mel", "mel_distance", "multiscale_stft_loss", "si_snr",
           "stft_magnitude"]

"""TouchTTS (arXiv 2412.08237): text -> S3 speech tokens (LM) -> mel (flow) -> waveform (vocoder)."""

"""S3Tokenizer (CosyVoice's supervised semantic speech tokenizer), v1, v1_25hz, v2 and v3.

- ``audio.s3tokenizer.model``: the encoder, quantizers, long-audio windows and the zoo model.
- ``audio.s3tokenizer.convert``: released ONNX graphs -> zoo folders; ``official_cards`` writes their cards.
- ``audio.s3tokenizer.tiny`` / ``train_tiny``: the tiny model trained here with its CTC head;
  ``demo``: the family's part of the demo table.
"""

from audio.s3tokenizer.model import (
    VARIANTS,
    S3Tokenizer,
    S3TokenizerConfig,
    length_groups,
    merge_windows,
    window_starts,
)

__all__ = ["VARIANTS", "S3Tokenizer", "S3TokenizerConfig", "length_groups", "merge_windows", "window_starts"]

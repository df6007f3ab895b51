"""Speech: shared audio input (``audio.io``), the Whisper-style front end (``audio.features``) and the
modality base (``audio.base``), then one subpackage per system: ``audio.s3tokenizer``."""

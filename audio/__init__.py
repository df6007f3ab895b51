"""Speech tokenizers: the S3Tokenizer family (v1, v1_25hz, v2, v3) and its Whisper-style front end."""

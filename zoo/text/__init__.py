"""The text family: tokenizers over one text base class, laid out like the other families.

- ``zoo.text.base``: ``TextTokenizer``, the text modality's base (encode/decode over strings and the
  text defaults of the tools' hooks).
- ``zoo.text.tokenizers``: ``byte-tokenizer``, ``hf-tokenizer``, ``sentencepiece``, ``tiktoken``.
- ``zoo.text.corpus``: the bundled 12-language corpus; ``zoo.text.train_tiny`` trains the tiny
  tokenizers on it; ``zoo.text.demo`` is the family's part of the demo table.
"""

from zoo.text.base import TextTokenizer, as_text_batch
from zoo.text.corpus import load_corpus, parallel_languages
from zoo.text.tokenizers import (
    ByteTokenizer,
    ByteTokenizerConfig,
    FileTokenizer,
    HFTokenizer,
    HFTokenizerConfig,
    SentencePieceConfig,
    SentencePieceTokenizer,
    TiktokenConfig,
    TiktokenTokenizer,
    byte_level_chars,
    parse_tiktoken_ranks,
)

__all__ = [
    "ByteTokenizer",
    "ByteTokenizerConfig",
    "FileTokenizer",
    "HFTokenizer",
    "HFTokenizerConfig",
    "SentencePieceConfig",
    "SentencePieceTokenizer",
    "TextTokenizer",
    "TiktokenConfig",
    "TiktokenTokenizer",
    "as_text_batch",
    "byte_level_chars",
    "load_corpus",
    "parallel_languages",
    "parse_tiktoken_ranks",
]

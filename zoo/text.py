"""Text tokenizers in the zoo registry.

Shape letters: B batch, N token positions.

``encode`` takes a string or a list of strings and returns Tokens with ids (B, N) right-padded
with the tokenizer's pad id and a mask of the real positions; ``decode`` returns a list of
strings. The byte-level tokenizer is the lossless baseline every other tokenizer is compared
against (its fertility is bytes per word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zoo.api import Tokens, ZooModel
from zoo.errors import InputError


def as_text_batch(text: str | Sequence[str]) -> list[str]:
    """A string or a sequence of strings -> a non-empty list of str; bytes are decoded as UTF-8 or refused."""
    items = [text] if isinstance(text, (str, bytes)) else list(text)
    if not items:
        raise InputError("empty batch: encode needs at least one string")
    batch = []
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"text item {i} is bytes that are not valid UTF-8 ({err.reason} at {err.start})"
                ) from err
        if not isinstance(item, str):
            raise InputError(f"text item {i} must be str, got {type(item).__name__}")
        batch.append(item)
    return batch


def pad_sequences(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into (B, N) int64 ids and a (B, N) bool mask (N >= 1, so empty strings fit)."""
    width = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
        mask[row, : len(seq)] = True
    return ids, mask


def unpad(tokens: Tokens) -> list[list[int]]:
    if tokens.ids is None:
        raise InputError("text decode needs Tokens with ids")
    return [row[m].tolist() for row, m in zip(tokens.ids.cpu(), tokens.mask.cpu())]


class TextTokenizer(ZooModel):
    """Shared encode/decode over ``encode_one`` / ``decode_one``; subclasses supply those two."""

    modality = "text"
    pad_id: int = 0

    def encode_one(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode_one(self, ids: list[int]) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def preprocess(self, raw) -> list[str]:
        """Strings pass through; paths are read as UTF-8 text files (invalid UTF-8 is an error)."""
        from pathlib import Path

        items = [raw] if isinstance(raw, (str, bytes, Path)) else list(raw)
        return as_text_batch([Path(x).read_bytes() if isinstance(x, Path) else x for x in items])

    def encode(self, text: str | Sequence[str]) -> Tokens:
        ids, mask = pad_sequences([self.encode_one(t) for t in as_text_batch(text)], self.pad_id)
        return Tokens(ids=ids, mask=mask, meta={"vocab_size": self.vocab_size})

    def decode(self, tokens: Tokens) -> list[str]:
        rows = unpad(tokens)
        for row in rows:
            if row and (min(row) < 0 or max(row) >= self.vocab_size):
                raise InputError(f"token ids must lie in [0, {self.vocab_size}), got [{min(row)}, {max(row)}]")
        return [self.decode_one(row) for row in rows]


@dataclass(frozen=True)
class ByteTokenizerConfig:
    """UTF-8 bytes as ids 0..255; id 256 pads. Lossless for every string."""

    pad_id: int = 256


class ByteTokenizer(TextTokenizer):
    arch = "byte-tokenizer"
    config_class = ByteTokenizerConfig

    def __init__(self, config: ByteTokenizerConfig = ByteTokenizerConfig()):
        super().__init__(config)
        self.pad_id = config.pad_id

    @property
    def vocab_size(self) -> int:
        return 257

    def encode_one(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_one(self, ids: list[int]) -> str:
        if any(i > 255 for i in ids):
            raise InputError("byte tokens must be 0..255 (256 is padding and is masked out)")
        return bytes(ids).decode("utf-8", errors="replace")

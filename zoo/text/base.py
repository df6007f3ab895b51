"""The text modality's base class and the helpers every text tokenizer shares.

Shape letters: B batch, N token positions.

``encode`` takes a string or a list of strings (bytes are accepted only if they are valid UTF-8)
and returns Tokens with ids (B, N) right-padded with the tokenizer's pad id and a mask of the real
positions; ``decode`` returns a list of strings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.api import Tokens, ZooModel, check_input_file, inference
from zoo.errors import InputError

SAMPLE_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Tokenizers turn text, images, speech and poses into ids.",
    "Grüße aus Zürich — naïve café, 東京, Привет!",
)


def as_text_batch(text: str | Sequence[str]) -> list[str]:
    """A string or a sequence of strings -> a non-empty list of str; bytes are decoded as UTF-8 or refused."""
    if not isinstance(text, (str, bytes, list, tuple)):
        raise InputError(f"text must be a str, UTF-8 bytes, or a list of them, got {type(text).__name__}")
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
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate (e.g. from bytes decoded with 'surrogateescape')
            raise InputError(
                f"text item {i} has a lone surrogate U+{ord(item[err.start]):04X} at {err.start}, which UTF-8 "
                "cannot encode"
            ) from err
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
    """The text modality's base: encode/decode over ``encode_one`` / ``decode_one`` (subclasses supply
    those two and ``vocab_size``), and the text defaults of the tools' hooks: files are UTF-8 text,
    sizes are UTF-8 bytes, quality is the fraction of exact round trips, fertility is an extra column."""

    modality = "text"
    supports_decode = True
    pad_id: int = 0

    def encode_one(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode_one(self, ids: list[int]) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Backends with a batch call override this."""
        return [self.encode_one(t) for t in texts]

    @inference
    def encode(self, text: str | Sequence[str] | Path) -> Tokens:
        """A string or list of B strings -> Tokens: ids (B, N) int64 padded with ``pad_id``, mask (B, N).
        ``pathlib.Path`` items are text files, read as UTF-8 (``preprocess``); a str is always the text itself."""
        ids, mask = pad_sequences(self.encode_many(self.preprocess(text)), self.pad_id)
        return Tokens(ids=ids, mask=mask, meta={"vocab_size": self.vocab_size})

    def preprocess(self, raw: Any) -> list[str]:
        """Strings pass through; paths are read as UTF-8 text files (invalid UTF-8 is an error)."""
        if not isinstance(raw, (str, bytes, Path, list, tuple)):
            raise InputError(f"text must be a str, UTF-8 bytes, a Path or a list of them, got {type(raw).__name__}")
        items = [raw] if isinstance(raw, (str, bytes, Path)) else list(raw)
        for item in items:
            if isinstance(item, Path):
                check_input_file(item, "text file")
        return as_text_batch([self.load_item(item) if isinstance(item, Path) else item for item in items])

    @inference
    def decode(self, tokens: Tokens) -> list[str]:
        """Tokens -> B strings (masked-out positions are ignored)."""
        if not isinstance(tokens, Tokens):
            raise InputError(f"decode takes zoo.Tokens, got {type(tokens).__name__}")
        rows = unpad(tokens)
        for row in rows:
            if row and (min(row) < 0 or max(row) >= self.vocab_size):
                raise InputError(f"token ids must lie in [0, {self.vocab_size}), got [{min(row)}, {max(row)}]")
        return [self.decode_one(row) for row in rows]

    # ---- the tools' hooks, text defaults ----------------------------------------------------------
    def load_item(self, path: str | os.PathLike) -> str:
        """A text file, read as UTF-8 (anything else is an InputError naming the byte)."""
        path = check_input_file(path, "text file")
        try:
            return path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 text (not valid UTF-8: {err.reason} at byte {err.start})") from err

    def input_units(self, item: Any) -> tuple[float, str] | None:
        return (float(len(item.encode("utf-8"))), "byte") if isinstance(item, str) else None

    def reconstruction_quality(self, items: list[Any], reconstructions: list[Any]) -> dict[str, Any]:
        exact = sum(a == b for a, b in zip(items, reconstructions)) / max(1, len(items))
        return {"name": "exact round trips", "value": exact, "protocol": "decode(encode(text)) == text, per item"}

    def compare_metrics(self, items: list[Any], token_batches: list[Tokens]) -> dict[str, float]:
        """Fertility: tokens per word (``zoo.metrics.text.count_words``)."""
        from zoo.metrics.text import count_words

        if not all(isinstance(item, str) for item in items):
            return {}
        words = sum(count_words(item) for item in items)
        tokens = sum(int(t.mask.sum()) for t in token_batches)
        return {"fertility": tokens / words} if words else {}

    def sample_inputs(self) -> list[str]:
        return list(SAMPLE_SENTENCES)

    @property
    def codebook_size(self) -> int:
        return self.vocab_size

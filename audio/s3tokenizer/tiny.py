"""Pieces of the tiny S3-style tokenizer trained here (see train_tiny.py and hub_cards/s3tokenizer-tiny).

S3Tokenizer is *supervised*: its tokens are trained to carry what an ASR head needs. The tiny
model reproduces that recipe at toy scale: the S3 encoder + FSQ (3^8 ids at 25 per second), then a
small CTC head that reads only the quantised codes and predicts characters. The head is kept beside
the tokenizer (``ctc_head.safetensors``) so the held-out character error rate can be re-measured.

Shape letters: B batch, S token steps, L code width (8), V characters + blank.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"  # id 0 is the CTC blank, characters start at 1
HEAD_FILE = "ctc_head.safetensors"


def text_to_ids(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in text.lower() if c in ALPHABET]


def normalise_text(text: str) -> str:
    return "".join(c for c in text.lower() if c in ALPHABET)


class CTCHead(nn.Module):
    """(B, S, L) quantised codes -> (B, 2S, V) character logits at twice the token rate.

    Speech carries about 15 characters per second against 25 tokens, too few CTC frames for an
    easy alignment, so the head doubles the frame rate between its two temporal convolutions.
    """

    upsample = 2

    def __init__(self, code_dim: int = 8, width: int = 192, vocab: int = len(ALPHABET) + 1):
        super().__init__()
        self.conv1 = nn.Conv1d(code_dim, width, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(width, width, kernel_size=5, padding=2)
        self.proj = nn.Linear(width, vocab)

    def forward(self, codes: Tensor) -> Tensor:
        x = F.gelu(self.conv1(codes.transpose(1, 2)))  # (B, W, S)
        x = x.repeat_interleave(self.upsample, dim=-1)  # (B, W, 2S)
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        return self.proj(x)


def load_head(folder: Path) -> CTCHead:
    from zoo.hub import load_weights

    head = CTCHead()
    load_weights(head, Path(folder) / HEAD_FILE)
    return head.eval()


def greedy_decode(logits: Tensor, lengths: Tensor) -> list[str]:
    """Best path: argmax per step, merge repeats, drop blanks."""
    best = logits.argmax(dim=-1)
    texts = []
    for row, n in zip(best, lengths.tolist()):
        previous, chars = 0, []
        for symbol in row[:n].tolist():
            if symbol != previous and symbol != 0:
                chars.append(ALPHABET[symbol - 1])
            previous = symbol
        texts.append("".join(chars))
    return texts


def character_error_rate(hypotheses: list[str], references: list[str]) -> float:
    """Edits over reference characters, references normalised to the model's alphabet (lower case, no punctuation)."""
    from zoo.metrics.text import character_error_rate as cer

    return cer([normalise_text(r) for r in references], hypotheses)


def transcribe(model, head: CTCHead, tokens) -> list[str]:
    """Greedy CTC transcripts read from token ids alone (ids -> FSQ codes -> head)."""
    codes = model.quantizer._codebook.fsq.ids_to_codes(tokens.ids)  # (B, S, 8)
    with torch.inference_mode():
        return greedy_decode(head(codes), tokens.lengths * head.upsample)


def codebook_stats(tokens, codebook_size: int) -> dict[str, float]:
    """Codebook usage (fraction of ids seen) and perplexity over the real tokens of a batch (zoo.metrics.tokens)."""
    from zoo.metrics.tokens import codebook_perplexity, codebook_usage

    return {"usage": codebook_usage(tokens, codebook_size), "perplexity": codebook_perplexity(tokens, codebook_size)}


def bits_per_second(token_rate: float, codebook_size: int) -> float:
    """Fixed-width bitrate: ``token_rate`` tokens per second of audio, log2(K) bits each (zoo.metrics.tokens)."""
    from zoo.metrics.tokens import bits_per_unit

    return bits_per_unit(int(token_rate), codebook_size, 1.0, unit="second")

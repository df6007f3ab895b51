"""Pieces of the tiny S3-style tokenizer trained here (see audio/train_tiny.py and hub_cards/s3tokenizer-tiny).

S3Tokenizer is *supervised*: its tokens are trained to carry what an ASR head needs. The tiny
model reproduces that recipe at toy scale: the S3 encoder + FSQ (3^8 ids at 25 per second), then a
small CTC head that reads only the quantised codes and predicts characters. The head is kept beside
the tokenizer (``ctc_head.safetensors``) so the held-out character error rate can be re-measured.

Shape letters: B batch, S token steps, L code width (8), V characters + blank.
"""

from __future__ import annotations

import math
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
    """(B, S, L) quantised codes -> (B, S, V) character logits: two temporal convolutions and a projection."""

    def __init__(self, code_dim: int = 8, width: int = 192, vocab: int = len(ALPHABET) + 1):
        super().__init__()
        self.conv1 = nn.Conv1d(code_dim, width, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(width, width, kernel_size=5, padding=2)
        self.proj = nn.Linear(width, vocab)

    def forward(self, codes: Tensor) -> Tensor:
        x = F.gelu(self.conv1(codes.transpose(1, 2)))
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


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous_diagonal, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous_diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous_diagonal + (ca != cb))
    return row[-1]


def character_error_rate(hypotheses: list[str], references: list[str]) -> float:
    """Total character edits over total reference characters (spaces count)."""
    errors = sum(edit_distance(h, normalise_text(r)) for h, r in zip(hypotheses, references))
    return errors / max(1, sum(len(normalise_text(r)) for r in references))


def transcribe(model, head: CTCHead, tokens) -> list[str]:
    """Greedy CTC transcripts read from token ids alone (ids -> FSQ codes -> head)."""
    codes = model.quantizer._codebook.fsq.ids_to_codes(tokens.ids)  # (B, S, 8)
    with torch.inference_mode():
        return greedy_decode(head(codes), tokens.lengths)


# Codebook statistics. zoo/metrics/tokens.py will hold the shared version (owned by the text family);
# until it lands this small local helper keeps the audio numbers honest.
def codebook_usage(ids: Tensor, mask: Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of the codebook used, perplexity of the id distribution, and its entropy in bits."""
    valid = ids[mask]
    counts = torch.bincount(valid, minlength=codebook_size).double()
    probs = counts / counts.sum().clamp(min=1)
    nonzero = probs[probs > 0]
    entropy = float(-(nonzero * nonzero.log2()).sum())
    return {"usage": float((counts > 0).sum()) / codebook_size, "perplexity": 2.0**entropy, "entropy_bits": entropy}


def bits_per_second(token_rate: float, codebook_size: int) -> float:
    """Fixed-length coding bitrate: tokens per second times log2 of the vocabulary."""
    return token_rate * math.log2(codebook_size)

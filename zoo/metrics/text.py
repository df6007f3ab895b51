"""Text tokenizer metrics: fertility, bytes and characters per token, and parity across languages.

Every function takes a text tokenizer (anything with ``encode(list[str]) -> Tokens`` whose mask marks
real tokens, i.e. every ``zoo.text`` model) and a list of strings; counts are summed over the list
before dividing, so long and short sentences weigh by their length.

- fertility = tokens / words (Rust et al. 2021). A *word* is a whitespace-separated run that holds at
  least one letter or digit; in scripts written without spaces (Han, Hiragana, Katakana) every
  character counts as a word, which is the usual convention when no segmenter is at hand.
- bytes per token = UTF-8 bytes / tokens; characters per token = code points / tokens. The byte
  tokenizer has exactly 1 byte per token.
- parity: the *premium* of a language is its token count on parallel sentences divided by the
  reference language's (Petrov et al. 2023, "Language Model Tokenizers Introduce Unfairness Between
  Languages"); a tokenizer at parity has premium 1 everywhere. ``parity_report`` sums it up as the
  worst premium and the spread max/min premium (the best-to-worst-served gap that Qtok-style
  multilingual reports show), 1.0 being perfect parity.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from zoo.errors import InputError

# Scripts written without spaces between words: each character is one word.
_UNSPACED_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9D),  # half-width Katakana
    (0x20000, 0x3134F),  # CJK extensions B..G
)


def is_unspaced_char(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _UNSPACED_RANGES)


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def count_words(text: str) -> int:
    """Words in ``text``: whitespace-separated runs with a letter or digit; each Han/Kana character is one word."""
    words = 0
    for chunk in text.split():
        rest = []
        for ch in chunk:
            if is_unspaced_char(ch):
                words += 1
            else:
                rest.append(ch)
        # What is left of the chunk (Latin letters beside kanji, Hangul, digits) counts once if it has a letter.
        if any(_is_word_char(ch) for ch in rest):
            words += 1
    return words


def _texts(texts: Sequence[str] | str) -> list[str]:
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise InputError("text metrics need at least one string")
    if not all(isinstance(t, str) for t in items):
        raise InputError("text metrics take str items")
    return items


def count_tokens(tokenizer: Any, texts: Sequence[str] | str) -> int:
    """Real tokens (mask True) the tokenizer produces for ``texts``, summed."""
    return int(tokenizer.encode(_texts(texts)).mask.sum())


def _ratio(numerator: int, denominator: int, what: str) -> float:
    if denominator == 0:
        raise InputError(f"cannot divide by zero {what}: the texts have none")
    return numerator / denominator


def fertility(tokenizer: Any, texts: Sequence[str] | str) -> float:
    """Tokens per word (lower is better; 1.0 means one token per word)."""
    texts = _texts(texts)
    return _ratio(count_tokens(tokenizer, texts), sum(count_words(t) for t in texts), "words")


def bytes_per_token(tokenizer: Any, texts: Sequence[str] | str) -> float:
    """UTF-8 bytes per token (higher compresses more; the byte tokenizer is exactly 1)."""
    texts = _texts(texts)
    return _ratio(sum(len(t.encode("utf-8")) for t in texts), count_tokens(tokenizer, texts), "tokens")


def chars_per_token(tokenizer: Any, texts: Sequence[str] | str) -> float:
    """Unicode code points per token."""
    texts = _texts(texts)
    return _ratio(sum(len(t) for t in texts), count_tokens(tokenizer, texts), "tokens")


def language_report(tokenizer: Any, corpus: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per language: tokens, words, bytes, characters, fertility, bytes/token and characters/token."""
    report = {}
    for lang, texts in corpus.items():
        texts = _texts(texts)
        tokens = count_tokens(tokenizer, texts)
        words = sum(count_words(t) for t in texts)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        chars = sum(len(t) for t in texts)
        report[lang] = {
            "tokens": tokens,
            "words": words,
            "bytes": n_bytes,
            "characters": chars,
            "fertility": _ratio(tokens, words, f"words in {lang}"),
            "bytes_per_token": _ratio(n_bytes, tokens, f"tokens in {lang}"),
            "chars_per_token": _ratio(chars, tokens, f"tokens in {lang}"),
        }
    return report


def premiums(tokenizer: Any, parallel: Mapping[str, Sequence[str]], reference: str = "en") -> dict[str, float]:
    """Token count of each language / the reference language's, on the same sentences in each language."""
    if reference not in parallel:
        raise InputError(f"the reference language {reference!r} is not among {sorted(parallel)}")
    sizes = {lang: len(texts) for lang, texts in parallel.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"parallel texts must have the same number of sentences per language, got {sizes}")
    counts = {lang: count_tokens(tokenizer, texts) for lang, texts in parallel.items()}
    return {lang: _ratio(n, counts[reference], f"tokens in {reference}") for lang, n in counts.items()}


def parity_report(tokenizer: Any, parallel: Mapping[str, Sequence[str]], reference: str = "en") -> dict[str, Any]:
    """Premiums per language plus the worst premium and the spread max/min (1.0 = every language at parity)."""
    prem = premiums(tokenizer, parallel, reference)
    worst = max(prem, key=prem.get)
    return {
        "reference": reference,
        "premiums": prem,
        "worst_language": worst,
        "max_premium": prem[worst],
        "spread": max(prem.values()) / min(prem.values()),
    }


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings, over code points (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Summed edit distance / summed reference length (0 for an exact round trip; can exceed 1)."""
    references, hypotheses = _texts(references), _texts(hypotheses)
    if len(references) != len(hypotheses):
        raise InputError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = sum(edit_distance(r, h) for r, h in zip(references, hypotheses) if r != h)
    total = sum(len(r) for r in references)
    if total == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / total

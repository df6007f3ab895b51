"""The TouchTTS text side: a character-level tokenizer whose vocabulary is data in config.json.

Upstream uses Qwen's byte-level BPE tokenizer with five audio tokens added (``tools/add_speech_tokens.py``:
``<|audio|> <|audio_bos|> <|audio_eos|> <|spk_eos|> <|ins_eos|>``), then N speech tokens as the
last vocabulary ids. The tiny models here read characters: every character of ``tokens`` is one id
(its index), and the multi-character entries (``<|...|>``) are special tokens, matched before single
characters. ``encode`` adds nothing; the LM adds bos itself, as upstream's extractor does.
"""

from __future__ import annotations

import logging
import re

from zoo.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

# Added to the base tokenizer by upstream's tools/add_speech_tokens.py, in this order, before the speech tokens.
AUDIO_SPECIAL_TOKENS = ("<|audio|>", "<|audio_bos|>", "<|audio_eos|>", "<|spk_eos|>", "<|ins_eos|>")
# Qwen's control tokens the recipe uses: pad (and the second stop id), bos (set by init_tokenizer), eos.
QWEN_CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def default_text_tokens() -> tuple[str, ...]:
    """Printable ASCII ("!" = 0 ... "~" = 93, space = 94), Qwen's three control tokens, the five audio tokens."""
    characters = tuple(chr(c) for c in range(ord("!"), ord("~") + 1)) + (" ",)
    return characters + QWEN_CONTROL_TOKENS + AUDIO_SPECIAL_TOKENS


class CharTokenizer:
    """Characters and ``<|...|>`` special tokens -> ids, by position in ``tokens``.

    Characters outside the vocabulary are dropped with a warning naming them; text that keeps no
    character at all is an InputError.
    """

    def __init__(self, tokens: tuple[str, ...] | list[str]):
        tokens = tuple(tokens)
        if len(set(tokens)) != len(tokens):
            raise ConfigError("text_tokens holds a token twice")
        self.tokens = tokens
        self.ids = {token: index for index, token in enumerate(tokens)}
        specials = sorted((t for t in tokens if len(t) > 1), key=len, reverse=True)
        self._special = re.compile("|".join(map(re.escape, specials))) if specials else None

    def __len__(self) -> int:
        return len(self.tokens)

    def token_id(self, token: str) -> int:
        if token not in self.ids:
            raise ConfigError(f"the text vocabulary has no token {token!r}")
        return self.ids[token]

    def unsupported(self, text: str) -> list[str]:
        """The characters of ``text`` outside the vocabulary (special tokens count as supported), in order."""
        plain = self._special.sub("", text) if self._special else text
        return list(dict.fromkeys(c for c in plain if c not in self.ids))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``: special tokens first, then one id per known character; unknown characters are dropped."""
        ids: list[int] = []
        position = 0
        for match in self._special.finditer(text) if self._special else ():
            ids.extend(self.ids[c] for c in text[position : match.start()] if c in self.ids)
            ids.append(self.ids[match.group()])
            position = match.end()
        ids.extend(self.ids[c] for c in text[position:] if c in self.ids)
        return ids

    def check_text(self, text: object, what: str = "text") -> str:
        """``text`` if it is a string holding at least one supported character; say which characters are dropped."""
        if not isinstance(text, str):
            raise InputError(f"{what} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InputError(f"{what} is empty: there is nothing to synthesise")
        dropped = self.unsupported(text)
        plain = self._special.sub("", text) if self._special else text
        if not any(c in self.ids and not c.isspace() for c in plain):
            raise InputError(
                f"{what} {text!r} holds only characters this model's vocabulary lacks ({''.join(dropped)!r}); "
                "use the characters of its text_tokens (printable ASCII for the tiny models)"
            )
        if dropped:
            logger.warning("dropping characters the vocabulary lacks from %r: %r", text, "".join(dropped))
        return text

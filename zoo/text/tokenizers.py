"""Text tokenizers in the zoo registry.

Shape letters: B batch, N token positions.

``encode`` takes a string or a list of strings (bytes are accepted only if they are valid UTF-8)
and returns Tokens with ids (B, N) right-padded with the tokenizer's pad id and a mask of the real
positions; ``decode`` returns a list of strings. Special tokens are handled explicitly: text is
never parsed for special tokens (a literal "<|endoftext|>" in the input is ordinary text), BOS/EOS
are added only when the config says so, and decode drops special tokens.

Four architectures:
- ``byte-tokenizer``: UTF-8 bytes as ids; lossless for every string. The baseline every other
  tokenizer is compared with (its fertility is bytes per word).
- ``hf-tokenizer``: any Hugging Face ``tokenizers`` tokenizer.json (BPE, Unigram, WordPiece...);
  ``HFTokenizer.train_bpe`` / ``train_unigram`` train byte-level ones from an iterator of strings,
  and those are lossless (every byte has a token, no normaliser).
- ``sentencepiece``: a sentencepiece ``.model``; ``SentencePieceTokenizer.train_from_iterator`` trains one with
  byte fallback, identity normalisation, no dummy prefix and kept whitespace, which is lossless for
  every string without U+2581 (sentencepiece's own space mark, which decodes to a space).
- ``tiktoken``: a local ``.tiktoken`` rank file (base64 token, rank per line) with its split regex;
  byte-level, so lossless. ``TiktokenTokenizer.from_byte_level_bpe`` makes one from our BPE.

Each config states ``lossless``: the promise decode(encode(s)) == s, which tests hold it to.
The model folder carries the tokenizer file beside config.json and an empty model.safetensors.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from zoo.errors import ConfigError, CorruptFileError, InputError, ModelFileNotFoundError, ZooError
from zoo.files import CONFIG_NAME, WEIGHTS_NAME, atomic_write
from zoo.hub import load_weights, read_config, save_model_folder
from zoo.text.base import TextTokenizer


@dataclass(frozen=True)
class ByteTokenizerConfig:
    """UTF-8 bytes as ids 0..255; id 256 pads. Lossless for every string."""

    pad_id: int = 256


class ByteTokenizer(TextTokenizer):
    arch = "byte-tokenizer"
    config_class = ByteTokenizerConfig

    def __init__(self, config: ByteTokenizerConfig = ByteTokenizerConfig(), *, device=None, dtype=None):
        super().__init__(config)  # no tensors: nothing to place
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


# ---- tokenizers backed by a file ------------------------------------------------------------------
class FileTokenizer(TextTokenizer):
    """A tokenizer whose whole state is one file (``tokenizer_file``) kept beside config.json.

    The file's bytes live on the model, so ``save_pretrained`` writes them back unchanged and a
    folder round trip is exact. model.safetensors is written (empty) so the folder has the shape
    of every zoo model, and it is loaded strictly like any other.
    """

    tokenizer_file: ClassVar[str] = ""

    def __init__(self, config: Any, data: bytes, *, device=None, dtype=None):
        super().__init__(config)  # no tensors: nothing to place
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise ConfigError(f"{type(self).__name__} needs the bytes of its {self.tokenizer_file}")
        self.tokenizer_bytes = bytes(data)
        self._load_backend(self.tokenizer_bytes)

    def _load_backend(self, data: bytes) -> None:
        raise NotImplementedError

    @classmethod
    def from_config_dict(cls, data, where: str = "config.json"):
        raise ConfigError(
            f"{cls.__name__} is defined by its {cls.tokenizer_file}, not by config.json alone; "
            f"load a model folder (zoo.load) or use {cls.__name__}.from_file"
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, **config_fields) -> FileTokenizer:
        """Wrap an existing tokenizer file; ``config_fields`` set the config (special tokens, lossless)."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileNotFoundError(str(path.parent), path.name)
        return cls(cls.config_class(**config_fields), path.read_bytes())

    @classmethod
    def from_folder(cls, folder: Path, source=None, revision=None, *, device=None, dtype=None) -> FileTokenizer:
        folder = Path(folder)
        where = source or str(folder)
        for name in (CONFIG_NAME, cls.tokenizer_file):
            if not (folder / name).is_file():
                raise ModelFileNotFoundError(where, name, revision)
        config = cls.config_from_json(read_config(folder / CONFIG_NAME, where), str(folder / CONFIG_NAME))
        try:
            model = cls(config, (folder / cls.tokenizer_file).read_bytes())
        except ZooError:
            raise
        except Exception as err:  # each backend raises its own error type for a broken file
            raise CorruptFileError(cls.tokenizer_file, f"not a readable tokenizer file ({err})", source=where) from err
        load_weights(model, folder / WEIGHTS_NAME, source=source, revision=revision)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike, card: Any = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / self.tokenizer_file, lambda tmp: tmp.write_bytes(self.tokenizer_bytes))
        return save_model_folder(self, folder, card=card)

    def with_specials(self, ids: list[int], add_bos: bool, add_eos: bool, bos: int | None, eos: int | None):
        if add_bos:
            ids = [bos, *ids]
        if add_eos:
            ids = [*ids, eos]
        return ids


# ---- Hugging Face tokenizers ----------------------------------------------------------------------
@dataclass(frozen=True)
class HFTokenizerConfig:
    """Special tokens are named by their text in tokenizer.json; None means the tokenizer has none."""

    pad_token: str | None = None  # ids are padded with its id, else 0 (the mask marks real tokens)
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos: bool = False
    add_eos: bool = False
    lossless: bool = False  # promise: decode(encode(s)) == s for every str (true for our byte-level ones)

    def __post_init__(self):
        for flag, token in (("add_bos", "bos_token"), ("add_eos", "eos_token")):
            if getattr(self, flag) and getattr(self, token) is None:
                raise ConfigError(f"HFTokenizerConfig.{flag}=True needs HFTokenizerConfig.{token}")


class HFTokenizer(FileTokenizer):
    """A Hugging Face ``tokenizers`` tokenizer.json: BPE, Unigram, WordPiece, with any pipeline."""

    arch = "hf-tokenizer"
    config_class = HFTokenizerConfig
    tokenizer_file = "tokenizer.json"
    hub_files = ("config.json", "model.safetensors", "tokenizer.json")

    def _load_backend(self, data: bytes) -> None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(data.decode("utf-8"))
        backend.no_padding()  # we pad ourselves, with a mask
        backend.no_truncation()
        backend.encode_special_tokens = True  # special tokens in the input text are plain text
        self.backend = backend
        self.special_ids = {}
        for field in ("pad_token", "bos_token", "eos_token"):
            token = getattr(self.config, field)
            if token is not None:
                token_id = backend.token_to_id(token)
                if token_id is None:
                    raise ConfigError(f"HFTokenizerConfig.{field}={token!r} is not in the tokenizer's vocabulary")
                self.special_ids[field] = token_id
        self.pad_id = self.special_ids.get("pad_token", 0)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode_one(self, text: str) -> list[int]:
        return self.encode_many([text])[0]

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        rows = [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        bos, eos = self.special_ids.get("bos_token"), self.special_ids.get("eos_token")
        return [self.with_specials(r, self.config.add_bos, self.config.add_eos, bos, eos) for r in rows]

    def decode_one(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)

    # -- training: byte-level, so every string has a tokenization and the round trip is exact --
    @classmethod
    def _byte_level_parts(cls):
        from tokenizers import decoders, pre_tokenizers

        # GPT-2's split regex over bytes mapped to printable characters; no normaliser, so nothing is lost.
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), decoders.ByteLevel()

    @classmethod
    def train_bpe(
        cls, texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = ("<|endoftext|>", "<pad>"), **cfg
    ) -> HFTokenizer:
        """Train a byte-level BPE from an iterator of strings (ids: special tokens, 256 bytes, then merges)."""
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        pre, dec = cls._byte_level_parts()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer, tok.decoder = pre, dec
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=list(special_tokens),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(HFTokenizerConfig(lossless=True, **cfg), tok.to_str().encode("utf-8"))

    @classmethod
    def train_unigram(
        cls, texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = ("<unk>", "<pad>", "<s>", "</s>"),
        **cfg,
    ) -> HFTokenizer:  # fmt: skip
        """Train a byte-level Unigram LM from an iterator of strings (all 256 bytes are in its vocabulary)."""
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        pre, dec = cls._byte_level_parts()
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer, tok.decoder = pre, dec
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=list(special_tokens),
            unk_token=special_tokens[0],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            max_piece_length=16,
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(HFTokenizerConfig(lossless=True, **cfg), tok.to_str().encode("utf-8"))


# ---- sentencepiece --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SentencePieceConfig:
    """BOS/EOS/pad are the model's own control symbols (ids stored in the .model file)."""

    add_bos: bool = False
    add_eos: bool = False
    lossless: bool = False  # see the module docstring: ours are lossless except for U+2581


class SentencePieceTokenizer(FileTokenizer):
    arch = "sentencepiece"
    config_class = SentencePieceConfig
    tokenizer_file = "tokenizer.model"
    hub_files = ("config.json", "model.safetensors", "tokenizer.model")

    def _load_backend(self, data: bytes) -> None:
        import sentencepiece as spm

        self.backend = spm.SentencePieceProcessor(model_proto=data)
        for flag, getter in (("add_bos", "bos_id"), ("add_eos", "eos_id")):
            if getattr(self.config, flag) and getattr(self.backend, getter)() < 0:
                raise ConfigError(f"SentencePieceConfig.{flag}=True but the model has no {getter[:3]} symbol")
        self.pad_id = max(self.backend.pad_id(), 0)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_piece_size()

    def encode_one(self, text: str) -> list[int]:
        ids = self.backend.encode(text, out_type=int)
        return self.with_specials(
            ids, self.config.add_bos, self.config.add_eos, self.backend.bos_id(), self.backend.eos_id()
        )

    def decode_one(self, ids: list[int]) -> str:
        return self.backend.decode(ids)  # control symbols (bos, eos, pad) decode to nothing

    @classmethod
    def train_from_iterator(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 0.9995,
        seed: int = 0,
        **cfg,
    ) -> SentencePieceTokenizer:
        """Train a byte-fallback sentencepiece model that keeps text as it is (see the module docstring)."""
        import io

        import sentencepiece as spm

        if model_type not in ("unigram", "bpe"):
            raise ConfigError(f"sentencepiece model_type must be 'unigram' or 'bpe', got {model_type!r}")
        if not 0.98 <= character_coverage <= 1.0:  # sentencepiece's own bound, checked here to name it
            raise ConfigError(f"sentencepiece character_coverage must be in [0.98, 1], got {character_coverage}")
        proto = io.BytesIO()
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,  # unseen characters become <0xNN> byte pieces instead of <unk>
            normalization_rule_name="identity",  # no NFKC: normalising would change the text
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            character_coverage=character_coverage,  # rarer characters fall back to bytes
            max_sentence_length=1 << 16,
            hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked for
            pad_id=3,
            num_threads=1,
            minloglevel=2,
        )
        return cls(SentencePieceConfig(lossless=False, **cfg), proto.getvalue())


# ---- tiktoken -------------------------------------------------------------------------------------
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@dataclass(frozen=True)
class TiktokenConfig:
    """The .tiktoken file holds the byte-pair ranks; the split regex and special tokens live here."""

    pattern: str = GPT2_SPLIT_PATTERN
    special_tokens: tuple[tuple[str, int], ...] = ()  # (text, id) pairs, outside the rank file
    pad_token: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos: bool = False
    add_eos: bool = False
    lossless: bool = True  # byte-level: every byte has a rank

    def __post_init__(self):
        names = {name for name, _ in self.special_tokens}
        for field in ("pad_token", "bos_token", "eos_token"):
            token = getattr(self, field)
            if token is not None and token not in names:
                raise ConfigError(f"TiktokenConfig.{field}={token!r} is not one of special_tokens")
        for flag, token in (("add_bos", "bos_token"), ("add_eos", "eos_token")):
            if getattr(self, flag) and getattr(self, token) is None:
                raise ConfigError(f"TiktokenConfig.{flag}=True needs TiktokenConfig.{token}")


def parse_tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    """A .tiktoken file (one "base64-token rank" per line) -> {token bytes: rank}."""
    ranks = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CorruptFileError("tokenizer.tiktoken", f"line {number} is not 'base64-token rank'")
        try:
            ranks[base64.b64decode(parts[0], validate=True)] = int(parts[1])
        except (ValueError, binascii.Error) as err:
            raise CorruptFileError("tokenizer.tiktoken", f"line {number}: {err}") from err
    if not ranks:
        raise CorruptFileError("tokenizer.tiktoken", "no ranks")
    return ranks


class TiktokenTokenizer(FileTokenizer):
    arch = "tiktoken"
    config_class = TiktokenConfig
    tokenizer_file = "tokenizer.tiktoken"
    hub_files = ("config.json", "model.safetensors", "tokenizer.tiktoken")

    def _load_backend(self, data: bytes) -> None:
        import tiktoken

        ranks = parse_tiktoken_ranks(data)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise CorruptFileError(
                "tokenizer.tiktoken", f"{len(missing)} single bytes have no rank (e.g. {missing[0]})"
            )
        specials = dict(self.config.special_tokens)
        clash = set(specials.values()) & set(ranks.values())
        if clash:
            raise ConfigError(f"TiktokenConfig.special_tokens reuse ranks of the .tiktoken file: {sorted(clash)[:5]}")
        self.backend = tiktoken.Encoding(
            name="tokenzoo", pat_str=self.config.pattern, mergeable_ranks=ranks, special_tokens=specials
        )
        self.special_id_set = set(specials.values())
        self.valid_ids = set(ranks.values()) | self.special_id_set
        self.pad_id = specials.get(self.config.pad_token, 0)

    @property
    def vocab_size(self) -> int:
        return self.backend.max_token_value + 1

    def encode_one(self, text: str) -> list[int]:
        return self.encode_many([text])[0]

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        # disallowed_special=() : special-token text in the input is encoded as ordinary text.
        rows = self.backend.encode_ordinary_batch(texts, num_threads=1)
        specials = dict(self.config.special_tokens)
        bos, eos = specials.get(self.config.bos_token), specials.get(self.config.eos_token)
        return [self.with_specials(r, self.config.add_bos, self.config.add_eos, bos, eos) for r in rows]

    def decode_one(self, ids: list[int]) -> str:
        unknown = [i for i in ids if i not in self.valid_ids]
        if unknown:
            raise InputError(f"token ids {unknown[:5]} are not in the tiktoken vocabulary")
        data = self.backend.decode_bytes([i for i in ids if i not in self.special_id_set])
        return data.decode("utf-8", errors="replace")

    @classmethod
    def from_byte_level_bpe(cls, bpe: HFTokenizer, **cfg) -> TiktokenTokenizer:
        """Our byte-level BPE as a .tiktoken file: each token's bytes with its id as rank.

        BPE ids grow in merge order, so ranks order merges as tiktoken expects; special tokens keep
        their ids, outside the rank file. Same split regex, so the ids mostly agree with the BPE's.
        """
        model = json.loads(bpe.tokenizer_bytes)
        if model["model"]["type"] != "BPE" or model.get("normalizer") is not None:
            raise ConfigError("from_byte_level_bpe needs a byte-level BPE without normaliser (HFTokenizer.train_bpe)")
        char_to_byte = {c: b for b, c in byte_level_chars().items()}
        specials = tuple((t["content"], t["id"]) for t in model.get("added_tokens", []) if t.get("special"))
        special_ids = {i for _, i in specials}
        lines = []
        for token, rank in sorted(model["model"]["vocab"].items(), key=lambda kv: kv[1]):
            if rank not in special_ids:
                lines.append(base64.b64encode(bytes(char_to_byte[c] for c in token)) + b" " + str(rank).encode())
        return cls(TiktokenConfig(special_tokens=specials, **cfg), b"\n".join(lines) + b"\n")


def byte_level_chars() -> dict[int, str]:
    """Byte-level BPE's byte -> character table (GPT-2's): printable Latin-1 bytes stand for themselves,
    the other 68 bytes take the code points from U+0100 upwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    table = {b: chr(b) for b in printable}
    for offset, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + offset)
    return table

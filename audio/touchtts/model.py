"""TouchTTS as a zoo model: text -> S3 speech tokens (LM) -> 80-bin mel (flow) -> 22.05 kHz waveform (vocoder).

Shape letters: B batch, N speech tokens, M mel bins, T mel frames, S samples.

The zoo contract for a text-to-speech system whose tokens are S3Tokenizer's:

* ``encode(text)`` -> Tokens of speech token ids (B, N) with a mask: what the LM says for the text.
* ``decode(tokens)`` -> (waveforms (B, S), lengths (B,)): speech from S3 tokens (from ``encode`` or from
  an S3Tokenizer of the same codebook), through flow and vocoder. This is the decoder S3Tokenizer lacks.
* ``synthesize(text, speaker=None, stream=False, seed=0)`` does both; with ``stream=True`` it yields
  waveform pieces while the LM is still writing tokens.

Sampling is seeded: the same text and seed give the same tokens and audio, alone or in a batch
(every item draws from its own generators). A speaker is a vector of the flow's ``spk_dim``, a name
from the model's ``speakers`` table, or None (the unconditioned voice).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from audio.touchtts.flow import FlowConfig, TouchFlow
from audio.touchtts.lm import IGNORE_INDEX, LMConfig, SpeechLM
from audio.touchtts.trunk import QwenShape
from zoo.api import Tokens, ZooModel, check_input_file, inference
from zoo.errors import ConfigError, InputError, NotSupportedError

logger = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SAMPLE_NAMES = ("touchtts-heldout0", "touchtts-heldout1")  # audio/samples/NAME.txt + NAME.wav (22.05 kHz)
TEXT_SUFFIX, AUDIO_SUFFIX = ".txt", ".wav"


@dataclass(frozen=True)
class TouchTTSConfig:
    """LM + flow + vocoder. Defaults are the documented full size: Qwen2.5-0.5B's shape for LM and flow trunks.

    ``vocoder`` is the vocoder's config as ``audio.touchtts.vocoder`` reads it (``{"type": ...}``);
    None builds a model that stops at the mel (``decode_mel``). ``speakers`` names the rows of the
    model's speaker table (one ``spk_dim`` vector each, stored with the weights).
    """

    lm: LMConfig = field(default_factory=LMConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    vocoder: dict | None = None
    speakers: tuple[str, ...] = ()
    default_speaker: str | None = None  # used when synthesize gets speaker=None; None = no speaker condition
    stream_chunk_frames: int = 24  # mel frames per streamed piece (~0.28 s); a static chunk of the flow's mask
    stream_left_chunks: int = -1  # chunks of left context a streamed piece attends to (-1: all)
    vocoder_context_frames: int = 8  # mel frames of context on each side when vocoding a streamed piece
    # The registered S3 tokenizer whose ids the model reads: it tokenizes training clips, and tokens
    # whose meta names another speech tokenizer are refused (same codebook size, other vocabulary).
    speech_tokenizer: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "lm", _coerce(LMConfig, self.lm, "TouchTTSConfig.lm"))
        object.__setattr__(self, "flow", _coerce(FlowConfig, self.flow, "TouchTTSConfig.flow"))
        object.__setattr__(self, "speakers", tuple(self.speakers))
        if self.lm.num_speech_tokens != self.flow.num_speech_tokens:
            raise ConfigError(
                f"TouchTTSConfig: the LM writes {self.lm.num_speech_tokens} speech tokens but the flow reads "
                f"{self.flow.num_speech_tokens}"
            )
        if self.vocoder is not None and not (isinstance(self.vocoder, dict) and "type" in self.vocoder):
            raise ConfigError("TouchTTSConfig.vocoder must be None or a dict with a 'type' key")
        if len(set(self.speakers)) != len(self.speakers):
            raise ConfigError("TouchTTSConfig.speakers names a speaker twice")
        if self.default_speaker is not None and self.default_speaker not in self.speakers:
            raise ConfigError(f"TouchTTSConfig.default_speaker={self.default_speaker!r} is not in speakers")
        if self.stream_chunk_frames < 1 or self.vocoder_context_frames < 0:
            raise ConfigError("TouchTTSConfig needs stream_chunk_frames >= 1 and vocoder_context_frames >= 0")


def _coerce(cls, value, where: str):
    """A nested config dataclass from itself or from config.json's dict (unknown keys are an error)."""
    from zoo.api import config_from_dict

    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
    return config_from_dict(cls, value, where=where)


def tiny_config(num_speech_tokens: int = 6561, **overrides) -> TouchTTSConfig:
    """A small configuration (2-layer, 64-wide trunks) over s3tokenizer-tiny's 6561 codes (tests, the tiny model)."""
    trunk = QwenShape(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096,
    )  # fmt: skip
    return TouchTTSConfig(
        lm=LMConfig(trunk=trunk, num_speech_tokens=num_speech_tokens),
        flow=FlowConfig(trunk=trunk, num_speech_tokens=num_speech_tokens),
        **overrides,
    )


def read_text_file(path: Path) -> str:
    """A UTF-8 text file's content (a missing file or other bytes is an InputError naming it)."""
    path = check_input_file(path, "text file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"text file {path} is not valid UTF-8 ({err.reason} at byte {err.start})") from err


class TouchTTS(ZooModel):
    """Text -> speech tokens -> mel -> waveform (arXiv 2412.08237; wenet-e2e/west ``touch_tts`` + ``touch_flow``)."""

    arch: ClassVar[str] = "touchtts"
    modality: ClassVar[str] = "audio"
    config_class: ClassVar[type] = TouchTTSConfig
    # The capability flags and task verbs of the house contract (issue 11).
    supports_decode: ClassVar[bool] = True
    supports_training: ClassVar[bool] = True
    tasks: ClassVar[tuple[str, ...]] = ("synthesize",)
    decodes_tokens_of: ClassVar[frozenset[str]] = frozenset({"s3tokenizer"})  # it speaks S3Tokenizer ids

    def __init__(
        self,
        config: TouchTTSConfig | None = None,
        *,
        vocoder: nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(config or TouchTTSConfig())
        config = self.config
        self.lm = SpeechLM(config.lm)
        self.flow = TouchFlow(config.flow)
        self.speaker_table = nn.Parameter(torch.zeros(len(config.speakers), config.flow.spk_dim))
        if vocoder is None and config.vocoder is not None:
            vocoder = build_vocoder(config.vocoder)
        self.vocoder = vocoder
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # ---- sizes --------------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        """N, the speech tokens the LM writes and the flow reads."""
        return self.config.lm.num_speech_tokens

    @property
    def sample_rate(self) -> int:
        return self.config.flow.sample_rate

    @property
    def token_rate(self) -> int:
        return self.config.flow.token_rate

    def sample_inputs(self) -> list[Path]:
        """Two held-out sentences of the espeak-ng corpus: NAME.txt, with the original speech NAME.wav beside it."""
        return [SAMPLES / f"{name}.txt" for name in SAMPLE_NAMES]

    # ---- inputs -------------------------------------------------------------------------------------
    def texts(self, text: str | list[str] | tuple[str, ...]) -> list[str]:
        """A string or a non-empty list of strings, each with something the vocabulary can read. A
        ``pathlib.Path`` is a UTF-8 text file and is read (a str is always the text itself)."""
        items = [text] if isinstance(text, str | Path) else text
        if not isinstance(items, list | tuple) or not items:
            raise InputError(f"text must be a string or a non-empty list of strings, got {text!r}")
        items = [read_text_file(t) if isinstance(t, Path) else t for t in items]
        return [
            self.lm.tokenizer.check_text(t, f"text[{i}]" if len(items) > 1 else "text") for i, t in enumerate(items)
        ]

    def speaker_vectors(self, speaker: Any, batch: int) -> Tensor | None:
        """speaker (None, a name, a (spk_dim,) or (B, spk_dim) vector) -> (B, spk_dim) or None (no condition)."""
        config = self.config
        if speaker is None:
            speaker = config.default_speaker
            if speaker is None:
                return None
        dim = config.flow.spk_dim
        if isinstance(speaker, str):
            if speaker not in config.speakers:
                known = ", ".join(config.speakers) or "none"
                raise InputError(f"unknown speaker {speaker!r}; this model knows: {known} (or pass a {dim}-d vector)")
            return self.speaker_table[config.speakers.index(speaker)][None].expand(batch, dim)
        if not isinstance(speaker, Tensor) or not speaker.is_floating_point():
            raise InputError(f"speaker must be None, a speaker name or a float tensor of {dim} values")
        if speaker.dim() == 1:
            speaker = speaker[None].expand(batch, -1)
        if speaker.dim() != 2 or speaker.shape != (batch, dim):
            raise InputError(
                f"speaker vector must have {dim} values (this model's spk_dim), as ({dim},) or ({batch}, {dim}); "
                f"got shape {tuple(speaker.shape)}"
            )
        if not torch.isfinite(speaker).all():
            raise InputError("speaker vector contains NaN or infinite values")
        return speaker.to(device=self.device, dtype=self.dtype)

    def check_tokens(self, tokens: Tokens) -> tuple[Tensor, Tensor]:
        """Tokens of S3 speech ids -> (codes (B, N), lengths (B,)); ids outside [0, N) are an InputError."""
        if not isinstance(tokens, Tokens) or tokens.ids is None:
            raise InputError("decode needs Tokens holding speech token ids (from encode or an S3Tokenizer)")
        size = tokens.meta.get("codebook_size")
        if size is not None and int(size) != self.codebook_size:
            raise InputError(
                f"these tokens come from a {size}-token codebook; this model reads {self.codebook_size} "
                "(use an S3Tokenizer variant with the same codebook)"
            )
        source = tokens.meta.get("speech_tokenizer")
        expected = self.config.speech_tokenizer
        if source is not None and expected is not None and source != expected:
            raise InputError(
                f"these tokens come from {source}; this model reads the ids of {expected} (same codebook size "
                "does not mean the same vocabulary)"
            )
        rate = tokens.meta.get("token_rate")
        if rate is not None and int(rate) != self.token_rate:
            raise InputError(f"these tokens run at {rate} per second; this model reads {self.token_rate} per second")
        # Valid positions must form a prefix (right padding), as every zoo tokenizer writes them.
        lengths = tokens.mask.sum(dim=1)
        prefix = torch.arange(tokens.ids.shape[1], device=tokens.ids.device)[None, :] < lengths[:, None]
        if not torch.equal(prefix, tokens.mask):
            raise InputError("Tokens.mask must mark a prefix of each row (right padding)")
        if int(lengths.min()) < 1:
            raise InputError("every item needs at least one speech token")
        codes = tokens.ids.to(self.device)
        self.lm.check_codes(codes, lengths)
        return codes.masked_fill(~prefix.to(codes.device), 0), lengths.to(self.device)

    # ---- text -> speech tokens ----------------------------------------------------------------------
    def _prompts(self, texts: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        batch = self.lm.collate([self.lm.layout(t, 0, inference=True) for t in texts])
        lengths = batch["attention_mask"].sum(dim=1)
        return batch["input_ids"].to(self.device), lengths.to(self.device), batch["text_lengths"].to(self.device)

    def _generators(self, seed: int, batch: int) -> list[torch.Generator]:
        """One CPU generator per item, all seeded alike: an item samples the same alone or in a batch."""
        if not isinstance(seed, int):
            raise InputError(f"seed must be an int, got {type(seed).__name__}")
        return [torch.Generator().manual_seed(seed) for _ in range(batch)]

    @inference
    def encode(self, x: str | list[str], seed: int = 0, sample: bool = True, max_tokens: int | None = None) -> Tokens:
        """Text (a string or a list) -> Tokens of speech token ids (B, N), right-padded, with a mask.

        Args:
            seed: the sampling seed (same text and seed, same tokens, alone or in a batch).
            sample: False picks the most likely id at every step (greedy) instead of sampling.
            max_tokens: a cap on new tokens on top of the LM's 30 per text id.
        """
        texts = self.texts(x)
        ids, lengths, text_lengths = self._prompts(texts)
        generators = self._generators(seed, len(texts)) if sample else None
        new, new_lengths = self.lm.generate(ids, lengths, text_lengths, generators, sample, max_new_tokens=max_tokens)
        codes, counts = self.lm.speech_codes(new, new_lengths)
        mask = torch.arange(codes.shape[1], device=codes.device)[None, :] < counts[:, None]
        return Tokens(ids=codes, mask=mask, meta=self._meta())

    def _meta(self) -> dict[str, Any]:
        return {"token_rate": self.token_rate, "codebook_size": self.codebook_size, "sample_rate": self.sample_rate}

    # ---- speech tokens -> mel -> waveform -----------------------------------------------------------
    @inference
    def decode_mel(self, tokens: Tokens, speaker: Any = None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Speech tokens -> (log-mel (B, M, T) zero-padded, frames (B,)) through the flow."""
        codes, lengths = self.check_tokens(tokens)
        spk = self.speaker_vectors(speaker, codes.shape[0])
        mel, frames = self.flow.sample(codes, lengths, spk, generators=self._generators(seed, codes.shape[0]))
        return mel.transpose(1, 2), frames

    @inference
    def decode(self, tokens: Tokens, speaker: Any = None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Speech tokens -> (waveforms (B, S) at ``sample_rate``, zero-padded; lengths (B,) in samples)."""
        mel, frames = self.decode_mel(tokens, speaker, seed)
        return self.vocode(mel, frames)

    def postprocess(self, output: tuple[Tensor, Tensor]) -> list[tuple[Any, int]]:
        """``decode``'s (waveforms (B, S), lengths (B,)) -> one (float32 numpy waveform, sample_rate) per item,
        cut to its length (what ``tokenzoo decode`` writes as .wav files)."""
        waveforms, lengths = output
        return [
            (w[: int(n)].detach().float().cpu().numpy(), int(self.sample_rate))
            for w, n in zip(waveforms, lengths.tolist())
        ]

    def vocode(self, mel: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, M, T) log-mel + (B,) frames -> (waveforms (B, S), lengths (B,)), each item on its own frames."""
        return self.require_vocoder().vocode(mel, frames)

    def require_vocoder(self) -> nn.Module:
        if self.vocoder is None:
            raise NotSupportedError(
                "this TouchTTS model has no vocoder (config.vocoder is None): use decode_mel for the mel, or "
                "attach_vocoder(...) first"
            )
        return self.vocoder

    def attach_vocoder(self, vocoder: nn.Module) -> TouchTTS:
        """Use ``vocoder`` (an ``audio.touchtts.vocoder.Vocoder``) from now on; config.vocoder records it."""
        if vocoder.sample_rate != self.sample_rate or vocoder.hop_length != self.config.flow.hop_length:
            raise ConfigError(
                f"the vocoder runs at {vocoder.sample_rate} Hz / hop {vocoder.hop_length}; the flow writes "
                f"{self.sample_rate} Hz / hop {self.config.flow.hop_length} mels"
            )
        self.vocoder = vocoder.to(device=self.device)
        self.config = dataclasses.replace(self.config, vocoder={"type": vocoder.kind, **vocoder.config_dict()})
        return self

    # ---- text -> waveform ---------------------------------------------------------------------------
    def synthesize(
        self,
        text: str | list[str],
        speaker: Any = None,
        stream: bool = False,
        seed: int = 0,
        max_tokens: int | None = None,
        return_lengths: bool = False,
    ):
        """Text -> speech at ``sample_rate``, float32.

        A string gives its waveform (S,); a list gives (B, S) waveforms, zero-padded after each item's
        end (silence), and with ``return_lengths=True`` the pair (waveforms, lengths (B,) in samples).
        With ``stream=True`` (one string) an iterator of 1-D waveform pieces that starts while the LM is
        still writing tokens (chunked flow under a static chunk mask, chunked vocoder). ``max_tokens``
        caps the speech tokens (25 per second) on top of the LM's own limit.
        """
        if stream:
            if not isinstance(text, str):
                raise InputError("stream=True synthesises one text (a string) at a time")
            self.texts(text)
            self.require_vocoder()
            return self._stream(text, speaker, seed, max_tokens)
        waves, lengths = self._synthesize(text, speaker, seed, max_tokens)
        if return_lengths:
            return waves, lengths
        return waves[0, : int(lengths[0])] if isinstance(text, str) else waves

    @inference
    def _synthesize(self, text, speaker, seed, max_tokens):
        self.require_vocoder()
        tokens = self.encode(text, seed=seed, max_tokens=max_tokens)
        return self.decode(tokens, speaker=speaker, seed=seed)

    def stream_mel(
        self, text: str, speaker: Any = None, seed: int = 0, max_tokens: int | None = None
    ) -> Iterator[Tensor]:
        """One text -> (M, F) mel pieces, each sampled as soon as the LM has written the tokens it reads."""
        config = self.config
        texts = self.texts(text)
        with torch.inference_mode():
            spk = self.speaker_vectors(speaker, 1)
            ids, lengths, text_lengths = self._prompts(texts)
            steps = self.lm.iter_generate(
                ids, lengths, text_lengths, self._generators(seed, 1), max_new_tokens=max_tokens
            )
            flow_stream = self.flow.stream(
                config.stream_chunk_frames, config.stream_left_chunks, spk, generator=self._generators(seed, 1)[0]
            )
        while True:
            with torch.inference_mode():
                step = next(steps, None)
                if step is None:
                    piece = flow_stream.finish()
                else:
                    token = step.token[step.counted]
                    speech = token[(token >= self.lm.speech_start) & (token < self.config.lm.vocab_size)]
                    piece = flow_stream.push(speech - self.lm.speech_start)
            if len(piece):
                yield piece.T
            if step is None:
                return

    def _stream(self, text: str, speaker: Any, seed: int, max_tokens: int | None) -> Iterator[Tensor]:
        vocoder = ChunkedVocoder(self.require_vocoder(), self.config.vocoder_context_frames)
        for mel in self.stream_mel(text, speaker, seed, max_tokens):
            with torch.inference_mode():
                wave = vocoder.push(mel.to(self.dtype))
            if len(wave):
                yield wave
        with torch.inference_mode():
            wave = vocoder.finish()
        if len(wave):
            yield wave

    # ---- hooks for the tools (zoo.api) ---------------------------------------------------------------
    def load_item(self, path: str | os.PathLike) -> dict[str, Any]:
        """NAME.txt or NAME.wav -> {"text", "audio"}: the text (lines joined by spaces) and the path of the
        speech NAME.wav when there is one (a training item; synthesis needs the text only)."""
        path = Path(path)
        if path.suffix not in (TEXT_SUFFIX, AUDIO_SUFFIX):
            raise InputError(f"{path}: TouchTTS reads NAME.txt (text) or NAME.wav with NAME.txt beside it")
        text_path, audio_path = path.with_suffix(TEXT_SUFFIX), path.with_suffix(AUDIO_SUFFIX)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if not text_path.is_file():
            raise InputError(f"{path}: no transcript {text_path.name} beside it")
        text = " ".join(text_path.read_text(encoding="utf-8").split())
        return {"text": text, "audio": audio_path if audio_path.is_file() else None}

    def batch_key(self, item: Any) -> int:
        return len(item["text"]) if isinstance(item, dict) else len(str(item))

    def collate(self, items: list[Any]) -> list[str]:
        """Items (texts, ``load_item``'s dicts, or Paths of NAME.txt / NAME.wav files) -> the texts ``encode`` takes."""
        items = [self.load_item(item) if isinstance(item, Path) else item for item in items]
        return self.texts([item["text"] if isinstance(item, dict) else item for item in items])

    def save_output(self, output: tuple[Any, int], path: str | os.PathLike) -> Path:
        """One (waveform, sample_rate) of ``reconstruct`` -> ``path``.wav (PCM16), written atomically."""
        from audio.touchtts.data import write_wav

        waveform, sample_rate = output
        path = Path(path).with_suffix(AUDIO_SUFFIX)
        write_wav(path, torch.as_tensor(waveform).clamp(-1, 1), sample_rate)
        return path

    def training_batch(self, items: list[Any]) -> dict[str, Any]:
        """``load_item`` dicts with speech -> LM + flow batch: S3 tokens of each clip from ``speech_tokenizer``,
        the 22.05 kHz mel as flow target, and the default speaker's row (fine-tuning moves that voice)."""
        from audio.io import SAMPLE_RATE, load_audio, pad_batch, resample
        from audio.touchtts.mel import DEFAULT_MEL, mel_spectrogram

        if any(not isinstance(item, dict) or item.get("audio") is None for item in items):
            raise InputError("TouchTTS trains on speech with its text: give NAME.wav files with NAME.txt beside them")
        if self.config.speech_tokenizer is None:
            raise NotSupportedError("this TouchTTS config names no speech_tokenizer to tokenize training clips with")
        tokenizer = _speech_tokenizer(self.config.speech_tokenizer)
        waves = [load_audio(item["audio"], self.sample_rate) for item in items]
        clips, clip_lengths = pad_batch([resample(w, self.sample_rate, SAMPLE_RATE) for w in waves])
        tokens = tokenizer.encode(clips, lengths=clip_lengths)
        codes, code_lengths = tokens.ids, tokens.lengths
        mels = []
        for wave, n in zip(waves, code_lengths.tolist()):
            mel, _ = mel_spectrogram(wave)
            frames = self.config.flow.mel_frames(n)
            target = torch.full((mel.shape[1], frames), math.log(DEFAULT_MEL.log_floor))  # the mel of silence
            target[:, : min(frames, mel.shape[2])] = mel[0, :, :frames]
            mels.append(target)
        mel, mel_lengths = pad_batch(mels)
        flow = {"mel": mel, "mel_lengths": mel_lengths, "codes": codes, "code_lengths": code_lengths}
        if self.config.default_speaker is not None:
            row = self.config.speakers.index(self.config.default_speaker)
            flow["speaker_ids"] = torch.full((len(items),), row, dtype=torch.int64)
        return {"lm": self.lm_batch([item["text"] for item in items], codes, code_lengths), "flow": flow}

    # ---- training -----------------------------------------------------------------------------------
    def lm_batch(self, texts: list[str], codes: Tensor, code_lengths: Tensor) -> dict[str, Tensor]:
        """Texts + their S3 codes (B, N) -> the LM's teacher-forcing batch (upstream layout, speech ids filled)."""
        items = [self.lm.layout(t, int(n)) for t, n in zip(self.texts(list(texts)), code_lengths.tolist())]
        batch = self.lm.collate(items)
        ids, labels = self.lm.fill_speech(
            batch["input_ids"], batch["labels"], batch["audio_offsets"], batch["batch_idx"], codes.cpu(), code_lengths
        )
        return {"input_ids": ids, "labels": labels, "attention_mask": batch["attention_mask"]}

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """The sum of the losses of the parts ``batch`` holds.

        ``batch["lm"]``: ``lm_batch``'s dict (input_ids, labels, attention_mask).
        ``batch["flow"]``: mel (B, M, T) vocoder log-mels, mel_lengths (B,), codes (B, N), code_lengths (B,)
        and optionally speaker (B, spk_dim) vectors or speaker_ids (B,) rows of the speaker table.
        Upstream trains LM and flow apart; a batch may hold either or both.
        """
        if not isinstance(batch, dict) or not {"lm", "flow"} & set(batch):
            raise InputError("training_loss needs a dict with an 'lm' and/or a 'flow' batch")
        losses = []
        if "lm" in batch:
            lm = {k: v.to(self.device) for k, v in batch["lm"].items()}
            if not (lm["labels"] != IGNORE_INDEX).any():
                raise InputError("the LM batch has no speech targets")
            losses.append(self.lm.loss(lm["input_ids"], lm["attention_mask"], lm["labels"]))
        if "flow" in batch:
            flow = batch["flow"]
            speaker = flow.get("speaker")
            if "speaker_ids" in flow:
                speaker = self.speaker_table[flow["speaker_ids"].to(self.device)]
            mel = flow["mel"].to(device=self.device, dtype=self.dtype).transpose(1, 2)
            losses.append(
                self.flow.training_loss(
                    mel,
                    flow["mel_lengths"].to(self.device),
                    flow["codes"].to(self.device),
                    flow["code_lengths"].to(self.device),
                    None if speaker is None else speaker.to(device=self.device, dtype=self.dtype),
                    generator=generator,
                )
            )
        return sum(losses)


class ChunkedVocoder:
    """Vocode a mel that arrives in pieces: each piece is vocoded with ``context`` frames on each side.

    A piece's last ``context`` frames wait for the next piece (their right context) unless the
    stream is finished, so the waveform equals vocoding the whole mel wherever the vocoder's
    receptive field is within ``context`` frames.
    """

    def __init__(self, vocoder: nn.Module, context: int):
        self.vocoder, self.context = vocoder, context
        self.mel: Tensor | None = None  # (M, T) received so far
        self.emitted = 0  # frames whose samples have been returned

    def push(self, mel: Tensor) -> Tensor:
        self.mel = mel if self.mel is None else torch.cat([self.mel, mel], dim=1)
        return self._emit(self.mel.shape[1] - self.context)

    def finish(self) -> Tensor:
        return self._emit(0 if self.mel is None else self.mel.shape[1])

    def _emit(self, end: int) -> Tensor:
        if self.mel is None or end <= self.emitted:
            return torch.zeros(0)
        hop = self.vocoder.hop_length
        first = max(self.emitted - self.context, 0)
        last = min(end + self.context, self.mel.shape[1])
        wave = self.vocoder(self.mel[None, :, first:last])[0].float()
        piece = wave[(self.emitted - first) * hop : (end - first) * hop]
        self.emitted = end
        return piece


@functools.lru_cache(maxsize=2)
def _speech_tokenizer(name: str) -> ZooModel:
    """The registered S3 tokenizer ``name``, loaded once per process (never a submodule: not in our state)."""
    import zoo

    return zoo.load(name).eval()


def build_vocoder(config: dict) -> nn.Module:
    """The vocoder ``config`` (``{"type": kind, ...}``) describes, from ``audio.touchtts.vocoder``'s table."""
    from audio.touchtts import vocoder as vocoders

    data = dict(config)
    kind = data.pop("type")
    if kind not in vocoders.VOCODERS:
        raise ConfigError(f"unknown vocoder type {kind!r}; known: {', '.join(sorted(vocoders.VOCODERS))}")
    return vocoders.VOCODERS[kind].from_config_dict(data)

"""S3Tokenizer (CosyVoice's supervised semantic speech tokenizer), variants v1, v1_25hz, v2 and v3.

One encoder serves all four variants; they differ only in options recorded in the config:

| variant  | conv1 stride | positions            | memory | quantizer        | tokens/s |
|----------|--------------|----------------------|--------|------------------|----------|
| v1       | 1            | absolute sinusoids   | -      | VQ 4096 (L2-norm)| 50       |
| v1_25hz  | 2            | absolute sinusoids   | -      | VQ 4096 (L2-norm)| 25       |
| v2, v3   | 2            | rotary (rotate-half) | FSMN   | FSQ 3^8 = 6561   | 25       |

(v3 is v2 with 12 blocks instead of 6.) Parameter names follow upstream's state dict
(xingchensong/S3Tokenizer), so its weights load without renaming once converted from ONNX.

Shape letters: B batch, M mel bins, T mel frames, S token steps (T / 2 or T / 4), C channels,
H heads, Dh head width, W windows.

Long audio: clips over 30 s (3000 frames) go through 30 s windows with a 26 s stride and the
token sequences are stitched by dropping 2 s at each inner seam. ``sliding_window="upstream"``
reproduces upstream exactly, including its tail loss (upstream issue #53: it keeps sliding after a
window already reached the end, so up to 2 s of tokens vanish); the default ``"complete"`` stops at
the window that reaches the end, so every frame is covered. Windows are encoded a few at a time,
so memory stays bounded however long the input.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.base import SpeechTokenizer
from audio.features import SAMPLE_RATE, log_mel_spectrogram
from audio.io import check_waveforms
from zoo.api import Tokens, inference
from zoo.errors import ConfigError, InputError, NotSupportedError
from zoo.quant import FSQ, VectorQuantizer

logger = logging.getLogger(__name__)

VARIANTS = ("v1", "v1_25hz", "v2", "v3")
WINDOW_FRAMES = 3000  # 30 s of 10 ms frames: the longest input the released models were trained on
STRIDE_FRAMES = 2600  # 26 s: consecutive windows overlap by 4 s
SEAM_SECONDS = 2  # half of the overlap, dropped on each side of an inner seam
SLIDING_WINDOW_MODES = ("complete", "upstream")


@dataclass(frozen=True)
class S3TokenizerConfig:
    """Defaults are the released speech_tokenizer_v2_25hz (CosyVoice 2)."""

    variant: str = "v2"  # v1 | v1_25hz | v2 | v3: decides stride, positions, memory block and quantizer
    n_mels: int = 128
    n_audio_ctx: int = 1500  # rows of v1's absolute position table (30 s at 50 tokens/s); unused by v2/v3
    n_audio_state: int = 1280
    n_audio_head: int = 20
    n_audio_layer: int = 6  # 12 for v3
    n_codebook_size: int = 6561  # 4096 for VQ (v1); 3^8 for FSQ (v2, v3)
    fsmn_kernel_size: int = 31
    sample_rate: int = SAMPLE_RATE  # the front end is fixed at 16 kHz; other rates are resampled

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"S3TokenizerConfig.variant={self.variant!r} must be one of {', '.join(VARIANTS)}")
        for name in ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_codebook_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"S3TokenizerConfig.{name}={getattr(self, name)} must be positive")
        if self.n_audio_state % self.n_audio_head:
            raise ConfigError(
                f"S3TokenizerConfig.n_audio_state={self.n_audio_state} must be divisible by "
                f"n_audio_head={self.n_audio_head}"
            )
        if self.uses_fsq:
            if self.n_codebook_size != 3**8:
                raise ConfigError(
                    f"S3TokenizerConfig.n_codebook_size={self.n_codebook_size}: {self.variant} uses FSQ with 8 "
                    "dimensions of 3 levels, so it must be 6561"
                )
            if (self.n_audio_state // self.n_audio_head) % 2:
                raise ConfigError("S3TokenizerConfig: rotary positions need an even head width")
            if self.fsmn_kernel_size < 1:
                raise ConfigError(f"S3TokenizerConfig.fsmn_kernel_size={self.fsmn_kernel_size} must be positive")
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError(f"S3TokenizerConfig.sample_rate={self.sample_rate}: the front end is fixed at 16000")

    @property
    def uses_fsq(self) -> bool:
        return self.variant in ("v2", "v3")

    @property
    def conv1_stride(self) -> int:
        return 1 if self.variant == "v1" else 2

    @property
    def token_rate(self) -> int:
        """Tokens per second: 100 mel frames per second divided by the two conv strides."""
        return 100 // (2 * self.conv1_stride)


# ---- blocks -------------------------------------------------------------------------------------
class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activation and weight dtype (as upstream does)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def sinusoids(length: int, channels: int) -> Tensor:
    """(length, channels) Whisper position table: sin in the first half of the channels, cos in the second."""
    log_increment = math.log(10000) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2))
    angles = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def rotary_tables(length: int, head_dim: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(S, Dh) cos and sin for positions 0..S-1; the Dh/2 frequencies repeat as two halves (not interleaved)."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device).float(), inv_freq)  # (S, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class MultiHeadAttention(nn.Module):
    """Self-attention with a key-padding bias; v2/v3 add rotary positions and an FSMN memory on the values.

    The key projection has no bias (as in Whisper). The FSMN memory is a depthwise convolution over
    time of the (masked) value projection plus the values themselves; it is added to the output.
    """

    def __init__(self, n_state: int, n_head: int, fsmn_kernel_size: int | None = None):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)
        self.fsmn_block = None
        if fsmn_kernel_size is not None:
            self.fsmn_block = nn.Conv1d(n_state, n_state, fsmn_kernel_size, groups=n_state, bias=False)
            self.fsmn_padding = ((fsmn_kernel_size - 1) // 2, fsmn_kernel_size - 1 - (fsmn_kernel_size - 1) // 2)

    def forward(
        self, x: Tensor, key_bias: Tensor | None, valid: Tensor | None, rotary: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """x (B, S, C), key_bias (B, 1, 1, S) additive, valid (B, S, 1) float mask -> (B, S, C).

        ``key_bias`` and ``valid`` are None when no sequence in the batch is padded (an all-zero bias
        and an all-one mask change nothing, bit for bit, so they are skipped).
        """
        batch, steps, channels = x.shape
        q = self.query(x).view(batch, steps, self.n_head, -1)  # (B, S, H, Dh)
        k = self.key(x).view(batch, steps, self.n_head, -1)
        v = self.value(x)  # (B, S, C)
        if rotary is not None:
            cos, sin = rotary[0][:, None], rotary[1][:, None]  # (S, 1, Dh)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        heads_v = v.view(batch, steps, self.n_head, -1)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), heads_v.transpose(1, 2), attn_mask=key_bias
        )  # (B, H, S, Dh); softmax(q k^T / sqrt(Dh) + bias) v
        output = self.out(attended.transpose(1, 2).reshape(batch, steps, channels))
        if self.fsmn_block is not None:
            masked = v if valid is None else v * valid
            memory = self.fsmn_block(F.pad(masked.transpose(1, 2), self.fsmn_padding)).transpose(1, 2)
            memory = memory + masked
            output = output + (memory if valid is None else memory * valid)
        return output


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) with an exact-GELU MLP of width 4C."""

    def __init__(self, n_state: int, n_head: int, fsmn_kernel_size: int | None = None):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head, fsmn_kernel_size)
        self.attn_ln = LayerNorm(n_state, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state, eps=1e-5)

    def forward(
        self, x: Tensor, key_bias: Tensor | None, valid: Tensor | None, rotary: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        x = x + self.attn(self.attn_ln(x), key_bias, valid, rotary)
        return x + self.mlp(self.mlp_ln(x))


def conv_length(length: Tensor | int, stride: int) -> Tensor | int:
    """Output length of a kernel-3, padding-1 convolution: ceil(length / stride)."""
    return (length - 1) // stride + 1


class AudioEncoder(nn.Module):
    """Two strided convolutions, then pre-LN blocks; no final LayerNorm (the last block's output is quantised)."""

    def __init__(self, config: S3TokenizerConfig):
        super().__init__()
        c = config.n_audio_state
        self.conv1_stride = config.conv1_stride
        self.conv1 = nn.Conv1d(config.n_mels, c, kernel_size=3, stride=config.conv1_stride, padding=1)
        self.conv2 = nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1)
        self.rotary_head_dim = c // config.n_audio_head if config.uses_fsq else None
        if not config.uses_fsq:
            self.register_buffer("positional_embedding", sinusoids(config.n_audio_ctx, c))
        kernel = config.fsmn_kernel_size if config.uses_fsq else None
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(c, config.n_audio_head, kernel) for _ in range(config.n_audio_layer)]
        )

    def forward(self, mel: Tensor, mel_len: Tensor) -> tuple[Tensor, Tensor]:
        """mel (B, M, T) zero-padded, mel_len (B,) -> hidden (B, S, C), token lengths (B,) int64.

        Each conv input is multiplied by its frame mask, so padding looks like the convolution's own
        zero padding and a clip gives the same result alone or in a batch. Rows >= length are junk.
        """
        mel_len = mel_len.to(device=mel.device, dtype=torch.int64)
        frames = mel.shape[-1]
        frame_mask = torch.arange(frames, device=mel.device)[None] < mel_len[:, None]  # (B, T)
        x = F.gelu(self.conv1(mel * frame_mask[:, None].to(mel.dtype)))
        len1 = conv_length(mel_len, self.conv1_stride)
        mask1 = torch.arange(x.shape[-1], device=mel.device)[None] < len1[:, None]
        x = F.gelu(self.conv2(x * mask1[:, None].to(x.dtype)))
        len2 = conv_length(len1, 2)
        x = x.transpose(1, 2)  # (B, S, C)
        steps = x.shape[1]
        mask2 = torch.arange(steps, device=mel.device)[None] < len2[:, None]  # (B, S)
        rotary = None
        if self.rotary_head_dim is None:
            if steps > self.positional_embedding.shape[0]:
                raise InputError(
                    f"{steps} token steps exceed the {self.positional_embedding.shape[0]} absolute positions of this "
                    "model; use encode(), which splits long audio into 30 s windows"
                )
            x = x + self.positional_embedding[:steps].to(x.dtype)
        else:
            rotary = tuple(t.to(x.dtype) for t in rotary_tables(steps, self.rotary_head_dim, x.device))
        key_bias = valid = None
        if not bool(mask2.all()):
            key_bias = ((~mask2).to(x.dtype) * -1e10)[:, None, None, :]  # (B, 1, 1, S): only keys are masked
            valid = mask2[:, :, None].to(x.dtype)  # (B, S, 1)
        for block in self.blocks:
            x = block(x, key_bias, valid, rotary)
        return x, len2


class VQCodebook(nn.Module):
    """Holds upstream's ``_codebook`` level so the key reads ``quantizer._codebook.embed``."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self._codebook = VectorQuantizer(codebook_size, dim, normalize_input=True)

    def forward(self, hidden: Tensor) -> Tensor:
        # nearest() normalises and searches in float32: ids near a tie must not depend on the activation dtype.
        return self._codebook.nearest(hidden)


class FSQProjection(nn.Module):
    """Linear C -> 8 (``project_down``), then FSQ with 3 levels per dimension and a 0.999 tanh bound."""

    def __init__(self, dim: int):
        super().__init__()
        self.project_down = nn.Linear(dim, 8)
        self.fsq = FSQ(levels=[3] * 8, bound_scale=1 - 1e-3)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.codes_and_ids(hidden)[1]

    def codes_and_ids(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """(..., C) -> (codes (..., 8) in {-1, 0, 1} with a straight-through gradient, ids (...,) int64)."""
        return self.fsq.quantize(self.project_down(hidden).float())


class FSQCodebook(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self._codebook = FSQProjection(dim)

    def forward(self, hidden: Tensor) -> Tensor:
        return self._codebook(hidden)


# ---- windows for long audio ---------------------------------------------------------------------
def window_starts(frames: int, mode: str = "complete") -> list[int]:
    """Start frames of the 30 s windows over a clip of ``frames`` mel frames (> 3000).

    ``upstream`` keeps sliding while the start lies inside the clip, even after a window already
    reached the end (issue #53); ``complete`` stops at the first window that reaches the end.
    """
    if mode not in SLIDING_WINDOW_MODES:
        raise InputError(f"sliding_window={mode!r} must be one of {', '.join(SLIDING_WINDOW_MODES)}")
    starts = [0]
    while True:
        if mode == "complete" and starts[-1] + WINDOW_FRAMES >= frames:
            return starts
        following = starts[-1] + STRIDE_FRAMES
        if following >= frames:
            return starts
        starts.append(following)


def merge_windows(window_ids: list[Tensor], seam_tokens: int) -> Tensor:
    """Stitch per-window ids: drop ``seam_tokens`` after every inner seam and before it (Python slices)."""
    pieces = []
    last = len(window_ids) - 1
    for index, ids in enumerate(window_ids):
        begin = 0 if index == 0 else seam_tokens
        end = len(ids) if index == last else max(len(ids) - seam_tokens, 0)  # Python's ids[:-seam] clamps at 0
        pieces.append(ids[begin:end])
    return torch.cat(pieces)


def length_groups(lengths: list[int], max_padding: float) -> list[list[int]]:
    """Positions of ``lengths`` grouped longest first so that padding each group to its longest
    item adds at most ``max_padding`` x its real length (0 gives one group per distinct length)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current and lengths[current[0]] * (len(current) + 1) > (1 + max_padding) * (real + lengths[i]):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        groups.append(current)
    return groups


# ---- the model ----------------------------------------------------------------------------------
class S3Tokenizer(SpeechTokenizer):
    """Speech -> discrete tokens at 25 or 50 per second. Encoder only: TouchTTS (or CosyVoice) is the decoder."""

    arch: ClassVar[str] = "s3tokenizer"
    config_class: ClassVar[type] = S3TokenizerConfig

    def __init__(self, config: S3TokenizerConfig | None = None, *, device=None, dtype=None):
        super().__init__(config or S3TokenizerConfig())
        config = self.config
        with self.building(device, dtype):
            self.encoder = AudioEncoder(config)
            if config.uses_fsq:
                self.quantizer = FSQCodebook(config.n_audio_state)
            else:
                self.quantizer = VQCodebook(config.n_codebook_size, config.n_audio_state)

    @property
    def codebook_size(self) -> int:
        return self.config.n_codebook_size

    @property
    def token_rate(self) -> int:
        return self.config.token_rate

    # ---- mel -> ids -------------------------------------------------------------------------------
    def encode_mel(self, mel: Tensor, mel_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One encoder pass over clips of at most 3000 frames: (hidden (B, S, C), ids (B, S), lengths (B,))."""
        hidden, lengths = self.encoder(mel.to(self.dtype), mel_len)
        return hidden, self.quantizer(hidden), lengths

    def quantize(
        self,
        mel: Tensor,
        mel_len: Tensor,
        sliding_window: str = "complete",
        window_batch: int = 8,
        max_padding: float = 0.25,
    ) -> tuple[Tensor, Tensor]:
        """(B, M, T) zero-padded log-mels + (B,) frame counts -> ((B, S) int64 ids, 0 past each length; (B,) lengths).

        Clips of at most 3000 frames are encoded in passes of similar lengths (padding adds at most
        ``max_padding`` of the real frames of a pass: padded frames cost compute but change no id,
        since a clip gives the same ids alone or in any batch). Longer clips go through 30 s
        windows, ``window_batch`` windows per encoder pass (bounded memory).
        """
        check_mel(mel, mel_len, self.config.n_mels)
        if window_batch < 1:
            raise InputError(f"window_batch={window_batch} must be >= 1")
        mel_len = mel_len.to(dtype=torch.int64, device=mel.device)
        is_long = mel_len > WINDOW_FRAMES
        rows: list[Tensor | None] = [None] * mel.shape[0]
        short = torch.nonzero(~is_long).flatten().tolist()
        for group in length_groups([int(mel_len[i]) for i in short], max_padding):
            members = [short[g] for g in group]
            width = int(mel_len[members].max())
            _, ids, lengths = self.encode_mel(mel[members, :, :width], mel_len[members])
            for row, index in enumerate(members):
                rows[index] = ids[row, : int(lengths[row])]
        for index in torch.nonzero(is_long).flatten().tolist():
            rows[index] = self._quantize_long(mel[index, :, : int(mel_len[index])], sliding_window, window_batch)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64, device=mel.device)
        ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.int64, device=mel.device)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = row
        return ids, lengths

    def _quantize_long(self, mel: Tensor, mode: str, window_batch: int) -> Tensor:
        """(M, T) one long clip -> (S,) ids via 30 s windows; every window restarts its positions at 0."""
        frames = mel.shape[-1]
        starts = window_starts(frames, mode)
        window_ids: list[Tensor] = []
        for first in range(0, len(starts), window_batch):
            chunk = starts[first : first + window_batch]
            windows = torch.zeros(len(chunk), mel.shape[0], WINDOW_FRAMES, dtype=mel.dtype, device=mel.device)
            lengths = torch.zeros(len(chunk), dtype=torch.int64, device=mel.device)
            for row, start in enumerate(chunk):
                piece = mel[:, start : start + WINDOW_FRAMES]
                windows[row, :, : piece.shape[-1]] = piece
                lengths[row] = piece.shape[-1]
            width = int(lengths.max())
            _, ids, token_lengths = self.encode_mel(windows[:, :, :width], lengths)
            window_ids.extend(ids[row, : int(token_lengths[row])] for row in range(len(chunk)))
        return merge_windows(window_ids, SEAM_SECONDS * self.token_rate)

    # ---- the zoo contract ---------------------------------------------------------------------
    @inference
    def encode(
        self,
        x: Any,
        lengths: Tensor | None = None,
        sample_rate: int | None = None,
        sliding_window: str = "complete",
        window_batch: int = 8,
    ) -> Tokens:
        """Waveforms or audio files -> Tokens with ids (B, S), mask (B, S) and meta.

        Args:
            x: a (B, N) or (N,) float waveform tensor / numpy array, a path, a list of paths or 1-D arrays,
                or the (waveforms, lengths) pair ``preprocess`` returns.
            lengths: (B,) valid samples per row of a padded (B, N) tensor (default: every row is full).
            sample_rate: the rate of array input (default 16 kHz); files carry their own. Other rates are resampled.
            sliding_window: "complete" (default) covers every frame of clips over 30 s; "upstream" reproduces
                upstream's windowing exactly, including its loss of up to 2 s at the end (upstream issue #53).
            window_batch: 30 s windows per encoder pass for long clips (memory is bounded by this).
        """
        if sliding_window not in SLIDING_WINDOW_MODES:  # checked up front: short clips never reach the windows
            raise InputError(f"sliding_window={sliding_window!r} must be one of {', '.join(SLIDING_WINDOW_MODES)}")
        if isinstance(x, tuple) and len(x) == 2 and all(isinstance(t, Tensor) for t in x) and lengths is None:
            x, lengths = x  # what preprocess returns: (waveforms (B, N), lengths (B,))
        if isinstance(x, Tensor) and lengths is not None:
            waveforms, lengths = check_waveforms(x, lengths, sample_rate)
        else:
            waveforms, lengths = self.preprocess(x, sample_rate=sample_rate)
        waveforms = waveforms.to(self.device)
        mel, mel_len = log_mel_spectrogram(waveforms, lengths, n_mels=self.config.n_mels)
        ids, token_lengths = self.quantize(mel, mel_len, sliding_window=sliding_window, window_batch=window_batch)
        mask = torch.arange(ids.shape[1], device=ids.device)[None] < token_lengths[:, None]
        return Tokens(
            ids=ids,
            mask=mask,
            meta={
                "sample_rate": SAMPLE_RATE,
                "token_rate": self.token_rate,
                "codebook_size": self.codebook_size,
                "variant": self.config.variant,
                "sliding_window": sliding_window,
                "num_samples": lengths.to(device=ids.device, dtype=torch.int64),
                # which vocabulary the ids are (v2, v3 and the tiny model share a size, not a codebook):
                # a decoder such as TouchTTS refuses ids of another tokenizer than the one it was trained on
                "speech_tokenizer": self.name or f"s3tokenizer-{self.config.variant}",
            },
        )

    def decode(self, tokens: Tokens, **kwargs) -> Any:
        raise NotSupportedError(
            f"s3tokenizer-{self.config.variant} has no decoder: S3 tokens are turned back into speech by a "
            "token-to-speech model such as TouchTTS (audio.touchtts) or CosyVoice's flow decoder, not by the "
            'tokenizer; for s3tokenizer-tiny ids: zoo.load("touchtts-tiny").decode(tokens)'
        )


def check_mel(mel: Tensor, mel_len: Tensor, n_mels: int) -> None:
    if not isinstance(mel, Tensor) or mel.dim() != 3 or mel.shape[1] != n_mels:
        shape = tuple(mel.shape) if isinstance(mel, Tensor) else type(mel).__name__
        raise InputError(f"mel must be (B, {n_mels}, T), got {shape}")
    if not isinstance(mel_len, Tensor) or mel_len.shape != (mel.shape[0],):
        raise InputError(f"mel_len must be a (B,) = ({mel.shape[0]},) tensor of frame counts")
    if int(mel_len.min()) < 1 or int(mel_len.max()) > mel.shape[-1]:
        raise InputError(f"mel_len values must lie in [1, {mel.shape[-1]}], got {mel_len.tolist()}")

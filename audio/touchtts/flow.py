"""TouchTTS flow: S3 speech codes -> 80-bin mel by conditional flow matching over a Qwen2 trunk.

Shape letters: B batch, C speech codes, T mel frames, M mel bins (80), H trunk width, S Euler steps.

Five M-wide streams are concatenated per frame, projected to H, run through the trunk
(bidirectional, or under a WeNet chunk mask for streaming) and projected back to a velocity::

    [ x_t | token condition | time condition | speaker condition | prompt-mel condition ]

* token condition: the trunk's own embedding table read with raw codes, an MLP to M, then linear
  interpolation from C codes to T frames (22050 / 256 / 25 = 3.45 frames per code).
* time condition: a sinusoidal embedding of 1000 t, an MLP to M. Speaker: a 192-d speaker vector,
  L2-normalised, one linear layer. Prompt: the mel of a prompt utterance over its first frames.
* training (OT-CFM, Lipman et al.): t = 1 - cos(pi u / 2), x_t = (1 - (1 - s) t) x0 + t x1, target
  x1 - (1 - s) x0; token, speaker and prompt conditions are dropped together with p = 0.2.
* sampling: Euler over the same cosine grid from noise (t = 0) to t = 1 in ``n_timesteps`` steps, each
  step ``v = (1 + a) v(cond) - a v(no cond)`` (classifier-free guidance, a = 0.7).

Upstream: ``west/models/touch_flow/modeling_touch_flow.py`` (wenet-e2e/west). Three of its batched
behaviours are wrong; ours is right by default and reproduces upstream one option away:
``token_interpolation="batched"`` (one interpolation over the zero-padded batch stretches padding into
shorter items' condition), ``attention_mask_form="additive_01"`` (a 0/1 mask added to the scores masks
nothing) and ``num_decoding_left_chunks=0`` (upstream's default: a static chunk sees no left context).
``euler_loop="truncated"`` is the oldest sampler, which stopped one step early at t ~ 0.69.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.touchtts.masks import choose_chunk, make_pad_mask, mask_to_bias, subsequent_chunk_mask
from audio.touchtts.trunk import QwenShape
from zoo.errors import ConfigError, InputError

TOKEN_INTERPOLATIONS = ("per_item", "batched")
ATTENTION_MASK_FORMS = ("bias", "additive_01")
EULER_LOOPS = ("full", "truncated")


@dataclass(frozen=True)
class FlowConfig:
    """Defaults: Qwen2.5-0.5B's shape over S3Tokenizer v2/v3's 6561 codes, the LibriTTS recipe's flow options."""

    trunk: QwenShape = field(default_factory=QwenShape)
    num_speech_tokens: int = 6561
    embed_rows: int = 0  # rows of the code embedding table; 0 = num_speech_tokens (upstream reuses a whole LLM table)
    mel_dim: int = 80
    spk_dim: int = 192  # CAM++ speaker vectors upstream
    sample_rate: int = 22050
    hop_length: int = 256
    token_rate: int = 25  # speech codes per second
    sigma_min: float = 1e-6
    training_cfg_rate: float = 0.2
    inference_cfg_rate: float = 0.7
    n_timesteps: int = 5
    prompt_probability: float = 0.5  # training: share of items given a prompt-mel condition
    prompt_max_fraction: float = 0.3  # ... of up to this fraction of their frames
    # Chunk masks (WeNet's options; see audio.touchtts.masks.choose_chunk). No chunking by default.
    use_dynamic_chunk: bool = False
    use_dynamic_left_chunk: bool = False
    decoding_chunk_size: int = 0
    static_chunk_size: int = 0
    num_decoding_left_chunks: int = -1  # all left chunks; upstream's default 0 gives a static chunk none
    enable_full_context: bool = True
    max_chunk_size: int = 86
    # Upstream behaviours, one option away.
    token_interpolation: str = "per_item"  # "batched": upstream's interpolation over the zero-padded batch
    attention_mask_form: str = "bias"  # "additive_01": the 0/1 mask added to scores (eager attention upstream)
    euler_loop: str = "full"  # "truncated": the oldest loop, n - 1 steps ending at t ~ 0.69

    def __post_init__(self):
        object.__setattr__(self, "trunk", QwenShape.coerce(self.trunk, "FlowConfig.trunk"))
        for name, allowed in (
            ("token_interpolation", TOKEN_INTERPOLATIONS),
            ("attention_mask_form", ATTENTION_MASK_FORMS),
            ("euler_loop", EULER_LOOPS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"FlowConfig.{name}={getattr(self, name)!r} must be one of {', '.join(allowed)}")
        if self.embed_rows and self.embed_rows < self.num_speech_tokens:
            raise ConfigError(
                f"FlowConfig.embed_rows={self.embed_rows} must hold the {self.num_speech_tokens} speech tokens"
            )
        for name in ("num_speech_tokens", "mel_dim", "spk_dim", "sample_rate", "hop_length", "token_rate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"FlowConfig.{name}={getattr(self, name)} must be positive")
        if self.n_timesteps < 1:
            raise ConfigError(f"FlowConfig.n_timesteps={self.n_timesteps} must be >= 1")
        if self.trunk.hidden_size % 2:
            raise ConfigError(f"FlowConfig.trunk.hidden_size={self.trunk.hidden_size} must be even (sin/cos halves)")

    @property
    def frames_per_token(self) -> float:
        return self.sample_rate / self.hop_length / self.token_rate

    def mel_frames(self, n_codes: int) -> int:
        """Mel frames synthesised for ``n_codes`` codes, as upstream rounds it: int(n / 25 * 22050 / 256)."""
        return int(n_codes / self.token_rate * self.sample_rate / self.hop_length)


def time_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """(B,) times -> (B, dim): [sin(scale t f_k), cos(scale t f_k)], f_k = exp(-k ln(1e4) / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = scale * t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def cosine_time(u: Tensor) -> Tensor:
    """The cosine scheduler's warp of uniform times: 1 - cos(pi u / 2) (more steps near t = 0)."""
    return 1 - torch.cos(u * 0.5 * torch.pi)


def interpolation_source(scale: Tensor, width: int) -> Tensor:
    """(B,) input rows per output row -> (B, width) float32 input positions read by output rows 0..width-1.

    ``F.interpolate(mode="linear", align_corners=False)``'s rule: ``(j + 0.5) * scale - 0.5``, at least 0.
    """
    rows = torch.arange(width, device=scale.device, dtype=torch.float32)
    return (scale.float()[:, None] * (rows[None, :] + 0.5) - 0.5).clamp(min=0)


def interpolate_linear(
    x: Tensor, in_lengths: Tensor, out_lengths: Tensor, width: int | None = None, scale: Tensor | float | None = None
) -> Tensor:
    """(B, L, D) -> (B, width, D): each item's first ``in_lengths`` rows stretched linearly to ``out_lengths`` rows.

    Same arithmetic as ``F.interpolate(mode="linear", align_corners=False)`` on each item alone, with
    ``scale = in / out`` computed in float32 as PyTorch's kernel does, unless ``scale`` fixes the input
    rows per output row (streaming at a known code rate). Positions past an item's last row read that
    row; output rows at or past ``out_lengths`` are zero.
    """
    batch, _, dim = x.shape
    width = int(out_lengths.max()) if width is None else width
    in_lengths = in_lengths.to(device=x.device, dtype=torch.int64)
    out_lengths = out_lengths.to(device=x.device, dtype=torch.int64)
    if scale is None:
        item_scale = in_lengths.float() / out_lengths.clamp(min=1).float()  # (B,)
    else:
        item_scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device).reshape(-1).expand(batch)
    source = interpolation_source(item_scale, width)  # (B, width)
    last = (in_lengths - 1).clamp(min=0)[:, None]
    lower = source.floor().long().clamp(max=last)
    upper = torch.minimum(lower + 1, last)
    weight = (source - lower.float()).clamp(max=1.0)[..., None].to(x.dtype)
    gather = lambda index: x.gather(1, index[..., None].expand(batch, width, dim))  # noqa: E731
    out = gather(lower) * (1 - weight) + gather(upper) * weight
    valid = torch.arange(width, device=x.device)[None, :] < out_lengths[:, None]
    return out * valid[..., None].to(x.dtype)


class InterpolateRegulator(nn.Module):
    """The older flow's length regulator (CosyVoice's): interpolate, then 4 x [Conv1d k3, GroupNorm, Mish], Conv1d k1.

    ``per_item`` interpolates each item alone to its own length (how the old TouchFlow called it);
    ``per_item=False`` interpolates the zero-padded batch in one go, as the module itself does.
    Parameter names are upstream's (``model.0.weight`` ...); ``only_interpolate`` has none.
    """

    def __init__(self, channels: int = 80, layers: int = 4, groups: int = 1, only_interpolate: bool = False):
        super().__init__()
        if only_interpolate:
            self.model = nn.Identity()
        else:
            blocks: list[nn.Module] = []
            for _ in range(layers):
                blocks += [nn.Conv1d(channels, channels, 3, 1, 1), nn.GroupNorm(groups, channels), nn.Mish()]
            self.model = nn.Sequential(*blocks, nn.Conv1d(channels, channels, 1, 1))

    def forward(self, x: Tensor, x_lengths: Tensor, ylens: Tensor, per_item: bool = True) -> Tensor:
        """(B, Lx, D) zero-padded, (B,) valid rows, (B,) target lengths -> (B, max(ylens), D), zero past each length."""
        width = int(ylens.max())
        if per_item:
            outputs = [self._one(x[i : i + 1, : int(x_lengths[i])], int(ylens[i]), width) for i in range(x.shape[0])]
            return torch.cat(outputs)
        full = torch.full_like(ylens, x.shape[1])
        stretched = interpolate_linear(x, full, torch.full_like(ylens, width))
        out = self.model(stretched.transpose(1, 2)).transpose(1, 2)
        return out * (~make_pad_mask(ylens, width))[..., None].to(out.dtype)

    def _one(self, x: Tensor, length: int, width: int) -> Tensor:
        lengths = torch.tensor([x.shape[1]], device=x.device)
        stretched = interpolate_linear(x, lengths, torch.tensor([length], device=x.device))
        out = self.model(stretched.transpose(1, 2)).transpose(1, 2)
        return F.pad(out, (0, 0, 0, width - length))


@dataclass
class FlowDraws:
    """The random draws of one training step, so a caller (or a parity test) can fix them.

    prompt_frames: (B,) int, frames of each item's own mel given as prompt condition; -1 = no prompt.
    t_uniform: (B,) uniform times before the scheduler's warp. keep: (B,) bool, False drops the
    token, speaker and prompt conditions (classifier-free guidance). noise: (B, T, M) x0.
    chunk: (chunk_size, num_left_chunks) of a drawn dynamic chunk mask; None: the config's fixed chunk, if any.
    """

    prompt_frames: Tensor
    t_uniform: Tensor
    keep: Tensor
    noise: Tensor
    chunk: tuple[int, int] | None = None


class TouchFlow(nn.Module):
    """Codes (+ speaker vector, + prompt mel) -> mel. Parameter names are upstream's ``TouchFlow`` ones."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        from transformers import Qwen2Model

        self.config = config
        hidden, mel = config.trunk.hidden_size, config.mel_dim
        self.llm = nn.Module()  # upstream keeps a whole causal LM and uses only llm.model (no output head)
        self.llm.model = Qwen2Model(config.trunk.qwen2_config(config.embed_rows or config.num_speech_tokens))
        self.spk_encoder = nn.Linear(config.spk_dim, mel)
        self.time_encoder = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, mel))
        self.token_encoder = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, mel))
        self.input_projector = nn.Linear(5 * mel, hidden)
        self.mel_projector = nn.Linear(hidden, mel)

    # ---- conditions -------------------------------------------------------------------------------
    def code_features(self, codes: Tensor, code_lengths: Tensor) -> Tensor:
        """(B, C) raw codes -> (B, C, M) token-encoder output, zero at padded code slots."""
        features = self.token_encoder(self.llm.model.embed_tokens(codes))
        valid = ~make_pad_mask(code_lengths.to(codes.device), codes.shape[1])
        return features * valid[..., None].to(features.dtype)

    def token_condition(self, features: Tensor, code_lengths: Tensor, frames: Tensor, scale: float | None = None):
        """(B, C, M) code features -> (B, max(frames), M), each item's codes stretched over its own frames.

        With ``token_interpolation="batched"`` (upstream) the whole zero-padded batch is stretched to
        the longest item instead, then cut at each length.
        """
        if self.config.token_interpolation == "batched":
            full = torch.full_like(frames, features.shape[1])
            return interpolate_linear(features, full, torch.full_like(frames, int(frames.max()))) * (
                ~make_pad_mask(frames.to(features.device))
            )[..., None].to(features.dtype)
        return interpolate_linear(features, code_lengths, frames, scale=scale)

    def speaker_condition(self, speaker: Tensor | None, batch: int) -> Tensor:
        """(B, spk_dim) speaker vectors -> (B, M); None -> zeros (no speaker condition)."""
        if speaker is None:
            return torch.zeros(batch, self.config.mel_dim, device=self.device, dtype=self.dtype)
        return self.spk_encoder(F.normalize(speaker.to(self.dtype), dim=1))

    def time_condition(self, t: Tensor) -> Tensor:
        """(B,) times in [0, 1] -> (B, M)."""
        return self.time_encoder(time_embedding(t, self.config.trunk.hidden_size).to(self.dtype))

    def fixed_chunk(self, frames: int) -> tuple[int, int] | None:
        """The config's chunk mask that needs no random draw: a static chunk, or a dynamic config's decoding
        chunk; None (full context) otherwise, including a dynamic config's training setting (0), which
        upstream would draw at random even when sampling."""
        config = self.config
        if config.use_dynamic_chunk and config.decoding_chunk_size == 0:
            return None
        return choose_chunk(
            frames,
            config.use_dynamic_chunk,
            config.use_dynamic_left_chunk,
            config.decoding_chunk_size,
            config.static_chunk_size,
            config.num_decoding_left_chunks,
        )

    def attention_bias(self, valid: Tensor, chunk: tuple[int, int] | None = None) -> Tensor:
        """(B, T) valid frames -> the 4-D additive mask the trunk takes: (B, 1, 1, T), or (B, 1, T, T) under a
        ``chunk`` = (chunk_size, num_left_chunks) mask."""
        mask = valid[:, None, :]  # (B, 1, T)
        if chunk is not None:
            mask = mask & subsequent_chunk_mask(valid.shape[1], *chunk, device=valid.device)[None]  # (B, T, T)
        return self._bias(mask[:, None])

    def _bias(self, mask: Tensor) -> Tensor:
        if self.config.attention_mask_form == "additive_01":
            return mask.to(self.dtype)  # upstream without mask_to_bias: 1 where allowed, 0 elsewhere, added
        return mask_to_bias(mask, self.dtype)

    def velocity(self, streams: Tensor, bias: Tensor, positions: Tensor | None = None, cache=None) -> Tensor:
        """(B, T, 5M) concatenated streams -> (B, T, M) velocity through input projector, trunk and mel projector."""
        hidden = self.llm.model(
            inputs_embeds=self.input_projector(streams),
            attention_mask=bias,
            position_ids=positions,
            cache=cache,
            use_cache=cache is not None,
        ).last_hidden_state
        return self.mel_projector(hidden)

    # ---- training ---------------------------------------------------------------------------------
    def draw(self, mel_lengths: Tensor, width: int, generator: torch.Generator | None = None) -> FlowDraws:
        """Draw a training step's randomness from ``generator`` (prompt, time, condition drop, noise, chunk)."""
        config, device = self.config, mel_lengths.device
        batch = mel_lengths.shape[0]
        prompt = torch.full((batch,), -1, dtype=torch.int64)
        for i, length in enumerate(mel_lengths.tolist()):
            if float(torch.rand((), generator=generator)) >= config.prompt_probability:
                prompt[i] = int(torch.randint(0, int(config.prompt_max_fraction * length) + 1, (), generator=generator))
        t_uniform = torch.rand(batch, generator=generator)
        keep = torch.rand(batch, generator=generator) > config.training_cfg_rate
        noise = torch.randn(batch, width, config.mel_dim, generator=generator)
        chunk = None
        if config.use_dynamic_chunk and config.decoding_chunk_size == 0:  # dynamic chunk training: one draw
            options = (config.use_dynamic_left_chunk, 0, 0, -1, config.enable_full_context, config.max_chunk_size)
            chunk = choose_chunk(width, True, *options, generator=generator)
        return FlowDraws(prompt.to(device), t_uniform.to(device), keep.to(device), noise.to(device), chunk)

    def training_loss(
        self,
        mel: Tensor,
        mel_lengths: Tensor,
        codes: Tensor,
        code_lengths: Tensor,
        speaker: Tensor | None = None,
        draws: FlowDraws | None = None,
        generator: torch.Generator | None = None,
        return_parts: bool = False,
    ):
        """OT-CFM loss of a batch: masked MSE between predicted and target velocity, per mel bin and frame.

        mel: (B, T, M) target log-mel, zero past ``mel_lengths``; codes: (B, C) raw codes, right-padded;
        speaker: (B, spk_dim) or None. ``draws`` fixes the randomness (else drawn from ``generator``).
        ``return_parts`` also returns the intermediate tensors by name (for tests and debugging).
        """
        config = self.config
        batch, width, mel_dim = mel.shape
        draws = draws if draws is not None else self.draw(mel_lengths, width, generator)
        valid = ~make_pad_mask(mel_lengths, width)  # (B, T)
        features = self.code_features(codes, code_lengths)
        token_cond = self.token_condition(features, code_lengths, mel_lengths)
        spk_cond = self.speaker_condition(speaker, batch)
        frames = torch.arange(width, device=mel.device)
        prompt = (frames[None, :] < draws.prompt_frames[:, None]).to(mel.dtype)[..., None]
        mel_cond = mel * prompt
        t = cosine_time(draws.t_uniform.to(mel.dtype))
        t_cond = self.time_condition(t)
        keep = draws.keep.to(mel.dtype)[:, None, None]
        x0, x1 = draws.noise.to(mel.dtype), mel
        xt = (1 - (1 - config.sigma_min) * t[:, None, None]) * x0 + t[:, None, None] * x1
        target = x1 - (1 - config.sigma_min) * x0
        streams = torch.cat(
            [
                xt,
                token_cond * keep,
                t_cond[:, None, :].expand(batch, width, mel_dim),
                spk_cond[:, None, :].expand(batch, width, mel_dim) * keep,
                mel_cond * keep,
            ],
            dim=-1,
        )  # (B, T, 5M)
        bias = self.attention_bias(valid, draws.chunk if draws.chunk is not None else self.fixed_chunk(width))
        v = self.velocity(streams, bias)
        weight = valid[..., None].to(mel.dtype)
        loss = ((v - target) * weight).pow(2).sum() / (weight.sum() * mel_dim)
        if not return_parts:
            return loss
        parts = dict(features=features, token_cond=token_cond, spk_cond=spk_cond, t=t, t_cond=t_cond)
        return loss, dict(parts, streams=streams, bias=bias, velocity=v, target=target)

    # ---- sampling ---------------------------------------------------------------------------------
    def time_grid(self, n_timesteps: int, device=None) -> Tensor:
        """(n + 1,) float32 cosine grid from 0 to 1."""
        return cosine_time(torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=torch.float32))

    def euler_schedule(self, n_timesteps: int, device=None) -> list[tuple[Tensor, Tensor]]:
        """[(t, dt)] of every Euler step, accumulated in float32 as upstream does (t += dt; dt = grid[k + 1] - t).

        The full loop takes n steps and ends at t = 1; ``euler_loop="truncated"`` takes n - 1.
        """
        grid = self.time_grid(n_timesteps, device)
        steps = n_timesteps if self.config.euler_loop == "full" else n_timesteps - 1
        t, dt, schedule = grid[0], grid[1] - grid[0], []
        for step in range(1, steps + 1):
            schedule.append((t, dt))
            t = t + dt
            if step < n_timesteps:
                dt = grid[step + 1] - t
        return schedule

    def prepare(
        self,
        codes: Tensor,
        code_lengths: Tensor,
        speaker: Tensor | None = None,
        prompt_mel: Tensor | None = None,
        prompt_mel_lengths: Tensor | None = None,
        prompt_codes: Tensor | None = None,
        prompt_code_lengths: Tensor | None = None,
        scale: float | None = None,
    ) -> dict:
        """The conditions of a sampling batch: prompt codes and mel first, then the codes to synthesise.

        Returns frames (B,) total, prompt (B,) prompt frames, out (B,) frames to synthesise, and the
        (2B, T, 5M) stream tensor whose first B rows are conditioned and last B unconditioned (x_t and
        time slots left for the sampler).
        """
        config = self.config
        batch, device = codes.shape[0], codes.device
        code_lengths = code_lengths.to(device=device, dtype=torch.int64)
        zeros = torch.zeros(batch, dtype=torch.int64, device=device)
        prompt_frames = zeros if prompt_mel is None else prompt_mel_lengths.to(device=device, dtype=torch.int64)
        prompt_count = zeros if prompt_codes is None else prompt_code_lengths.to(device=device, dtype=torch.int64)
        out_frames = torch.tensor([config.mel_frames(int(n)) for n in code_lengths.tolist()], device=device)
        frames = prompt_frames + out_frames
        # Each item's prompt codes then its codes, right-padded: (B, Cp + C).
        all_codes = torch.zeros(batch, int((prompt_count + code_lengths).max()), dtype=torch.int64, device=device)
        for i in range(batch):
            p, n = int(prompt_count[i]), int(code_lengths[i])
            if p:
                all_codes[i, :p] = prompt_codes[i, :p]
            all_codes[i, p : p + n] = codes[i, :n]
        features = self.code_features(all_codes, prompt_count + code_lengths)
        width = int(frames.max())
        token_cond = self.token_condition(features, prompt_count + code_lengths, frames, scale)
        spk_cond = self.speaker_condition(speaker, batch)[:, None, :].expand(batch, width, config.mel_dim)
        mel_cond = torch.zeros(batch, width, config.mel_dim, device=device, dtype=self.dtype)
        if prompt_mel is not None:
            keep = ~make_pad_mask(prompt_frames, prompt_mel.shape[1])
            mel_cond[:, : prompt_mel.shape[1]] = prompt_mel.to(self.dtype) * keep[..., None].to(self.dtype)
        streams = torch.zeros(2 * batch, width, 5 * config.mel_dim, device=device, dtype=self.dtype)
        m = config.mel_dim
        streams[:batch, :, m : 2 * m] = token_cond
        streams[:batch, :, 3 * m : 4 * m] = spk_cond
        streams[:batch, :, 4 * m :] = mel_cond
        return {"frames": frames, "prompt": prompt_frames, "out": out_frames, "streams": streams}

    def initial_noise(self, frames: Tensor, generators: list | None) -> Tensor:
        """(B, T, M) x0: item i's frames drawn from its own generator (upstream: randn_like after a seed)."""
        width = int(frames.max())
        noise = torch.zeros(len(frames), width, self.config.mel_dim, dtype=self.dtype, device=frames.device)
        for i, n in enumerate(frames.tolist()):
            generator = None if generators is None else generators[i]
            noise[i, :n] = torch.randn(1, n, self.config.mel_dim, generator=generator)[0].to(noise)
        return noise

    @torch.no_grad()
    def sample(
        self,
        codes: Tensor,
        code_lengths: Tensor,
        speaker: Tensor | None = None,
        prompt_mel: Tensor | None = None,
        prompt_mel_lengths: Tensor | None = None,
        prompt_codes: Tensor | None = None,
        prompt_code_lengths: Tensor | None = None,
        noise: Tensor | None = None,
        generators: list[torch.Generator | None] | None = None,
        n_timesteps: int | None = None,
        cfg_rate: float | None = None,
        chunk: tuple[int, int] | None = None,
        codes_per_frame: float | None = None,
        return_steps: bool = False,
    ):
        """Euler/CFG sampling of a batch. Returns (mel (B, T', M) frames after each prompt, zero-padded; lengths (B,)).

        noise: (B, T, M) x0 over prompt + output frames (default: drawn per item from ``generators``).
        chunk: (chunk_size, num_left_chunks) to sample under a chunk mask (default: ``fixed_chunk``).
        codes_per_frame: map codes to frames at this fixed rate (what a stream with an unknown total
            does) instead of each item's codes over its frames.
        ``return_steps`` adds a dict with the per-step t, dt, velocities and states.
        """
        config = self.config
        n_timesteps = n_timesteps or config.n_timesteps
        alpha = config.inference_cfg_rate if cfg_rate is None else cfg_rate
        cond = self.prepare(
            codes, code_lengths, speaker, prompt_mel, prompt_mel_lengths, prompt_codes, prompt_code_lengths,
            codes_per_frame,
        )  # fmt: skip
        frames, streams = cond["frames"], cond["streams"]
        batch, width, m = codes.shape[0], streams.shape[1], config.mel_dim
        x = self.initial_noise(frames, generators) if noise is None else noise.to(self.dtype)
        valid = ~make_pad_mask(frames, width)
        bias = self.attention_bias(valid.repeat(2, 1), chunk if chunk is not None else self.fixed_chunk(width))
        steps = {"t": [], "dt": [], "v_cond": [], "v_uncond": [], "x": []}
        for t, dt in self.euler_schedule(n_timesteps, codes.device):
            streams[:, :, :m] = x.repeat(2, 1, 1)
            streams[:, :, 2 * m : 3 * m] = self.time_condition(t.reshape(1))[:, None, :]
            v = self.velocity(streams, bias)
            v_cond, v_uncond = v[:batch], v[batch:]
            x = x + dt * ((1.0 + alpha) * v_cond - alpha * v_uncond)
            if return_steps:
                for key, value in (("t", t), ("dt", dt), ("v_cond", v_cond), ("v_uncond", v_uncond), ("x", x)):
                    steps[key].append(value)
        mel = torch.zeros(batch, int(cond["out"].max()), m, dtype=x.dtype, device=x.device)
        for i in range(batch):
            start, n = int(cond["prompt"][i]), int(cond["out"][i])
            mel[i, :n] = x[i, start : start + n]
        if return_steps:
            return mel, cond["out"], {k: torch.stack(v) for k, v in steps.items()}
        return mel, cond["out"]

    def stream(
        self,
        chunk_frames: int,
        left_chunks: int = -1,
        speaker: Tensor | None = None,
        prompt_mel: Tensor | None = None,
        prompt_codes: Tensor | None = None,
        total_codes: int | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        n_timesteps: int | None = None,
        cfg_rate: float | None = None,
    ) -> FlowStream:
        """A streaming sampler for one utterance: push codes as they arrive, take mel chunk by chunk.

        See :class:`FlowStream`. ``total_codes`` (when known) makes it reproduce ``sample`` under the
        same chunk mask exactly; unknown, codes map to frames at the fixed rate of 3.45 frames per code.
        """
        return FlowStream(
            self, chunk_frames, left_chunks, speaker, prompt_mel, prompt_codes, total_codes, noise, generator,
            n_timesteps or self.config.n_timesteps, self.config.inference_cfg_rate if cfg_rate is None else cfg_rate,
        )  # fmt: skip

    @property
    def device(self) -> torch.device:
        return self.input_projector.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.input_projector.weight.dtype


class FlowStream:
    """Chunk-by-chunk flow sampling of one utterance (batch 1) under a static chunk mask.

    Frame chunks of ``chunk_frames`` are sampled in order, each as soon as the codes its token
    condition reads have arrived. At every Euler step a chunk attends to itself and ``left_chunks``
    chunks before it (all when negative) through a per-step key/value cache, which is exactly what
    the chunk mask allows, so the mel equals ``TouchFlow.sample`` with ``chunk=(chunk_frames,
    left_chunks)`` when the total code count is known up front; a chunk never depends on later codes.
    With one chunk spanning everything it equals offline sampling.

    ``push(codes)`` returns the mel frames (F, M) completed by those codes (possibly none);
    ``finish()`` returns the rest. Prompt frames are conditions only and never returned.
    """

    def __init__(
        self,
        flow: TouchFlow,
        chunk_frames: int,
        left_chunks: int,
        speaker: Tensor | None,
        prompt_mel: Tensor | None,
        prompt_codes: Tensor | None,
        total_codes: int | None,
        noise: Tensor | None,
        generator: torch.Generator | None,
        n_timesteps: int,
        cfg_rate: float,
    ):
        if chunk_frames < 1:
            raise InputError(f"chunk_frames={chunk_frames} must be >= 1")
        config = flow.config
        self.flow, self.chunk_frames, self.left_chunks = flow, chunk_frames, left_chunks
        self.speaker = speaker
        self.prompt_mel = None if prompt_mel is None else prompt_mel.reshape(-1, config.mel_dim)
        self.prompt_codes = (
            torch.zeros(0, dtype=torch.int64, device=flow.device) if prompt_codes is None else prompt_codes.reshape(-1)
        )
        self.prompt_frames = 0 if self.prompt_mel is None else self.prompt_mel.shape[0]
        self.total_codes = total_codes
        self.noise = None if noise is None else noise.reshape(-1, config.mel_dim)
        self.generator, self.cfg_rate = generator, cfg_rate
        self.schedule = flow.euler_schedule(n_timesteps, flow.device)
        self.caches: list = [None] * len(self.schedule)
        self.codes = torch.zeros(0, dtype=torch.int64, device=flow.device)
        self.done_frames = 0  # frames sampled so far (prompt included)
        self.finished = False

    def _frames(self, n_codes: int) -> int:
        """Prompt frames + the frames ``n_codes`` codes synthesise."""
        return self.prompt_frames + self.flow.config.mel_frames(n_codes)

    def _mapping(self) -> tuple[int, Tensor, int | None]:
        """(codes the interpolation spans, (1,) float32 codes per frame, total frames or None while unknown).

        Known total: upstream's mapping, all codes over all frames (float32, as ``interpolate_linear``).
        Unknown: the fixed code rate.
        """
        n_codes = len(self.prompt_codes) + (self.total_codes if self.total_codes is not None else len(self.codes))
        if self.total_codes is not None:
            frames = self._frames(self.total_codes)
            return n_codes, torch.tensor([float(n_codes)]) / torch.tensor([float(max(frames, 1))]), frames
        rate = torch.tensor([1.0 / self.flow.config.frames_per_token], dtype=torch.float32)
        return n_codes, rate, self._frames(len(self.codes)) if self.finished else None

    def _ready_frames(self) -> int:
        """Frames whose token condition reads only codes that have arrived, within the utterance."""
        n_arrived = len(self.prompt_codes) + len(self.codes)
        n_codes, scale, total = self._mapping()
        limit = total if total is not None else self._frames(len(self.codes))
        if limit <= 0 or n_arrived == 0:
            return 0
        source = interpolation_source(scale, limit)[0]
        upper = source.floor().long() + 1  # the last code a frame reads...
        if total is not None:
            upper = upper.clamp(max=max(n_codes - 1, 0))  # ...which is the last code once the total is known
        return int((upper < n_arrived).sum())

    def push(self, codes: Tensor) -> Tensor:
        if self.finished:
            raise InputError("this stream is finished; start a new one")
        codes = codes.reshape(-1).to(device=self.codes.device, dtype=torch.int64)
        self.codes = torch.cat([self.codes, codes])
        if self.total_codes is not None and len(self.codes) > self.total_codes:
            raise InputError(f"pushed {len(self.codes)} codes into a stream announced with {self.total_codes}")
        return self._advance()

    def finish(self) -> Tensor:
        if self.total_codes is not None and len(self.codes) != self.total_codes:
            raise InputError(f"stream announced {self.total_codes} codes but received {len(self.codes)}")
        self.finished = True
        return self._advance()

    def _advance(self) -> Tensor:
        """Sample every chunk that is complete and readable now; return the new frames past the prompt."""
        ready, total = self._ready_frames(), self._mapping()[2]
        pieces = []
        while True:
            start = self.done_frames
            end = (start // self.chunk_frames + 1) * self.chunk_frames
            if total is not None:
                end = min(end, total)
            if end <= start or ready < end:
                break
            pieces.append(self._sample_chunk(start, end))
            self.done_frames = end
        return torch.cat(pieces) if pieces else torch.zeros(0, self.flow.config.mel_dim, device=self.codes.device)

    @torch.no_grad()
    def _sample_chunk(self, start: int, end: int) -> Tensor:
        """Sample frames [start, end) of one chunk through every Euler step; return those past the prompt (F, M)."""
        from transformers import DynamicCache

        flow, m, n = self.flow, self.flow.config.mel_dim, end - start
        n_codes, scale, _ = self._mapping()
        codes = torch.cat([self.prompt_codes, self.codes])[None]
        features = flow.code_features(codes, torch.tensor([codes.shape[1]], device=codes.device))
        lengths = torch.tensor([n_codes], device=codes.device)
        token_cond = interpolate_linear(features, lengths, torch.tensor([end]), width=end, scale=scale)[:, start:]
        streams = torch.zeros(2, n, 5 * m, device=flow.device, dtype=flow.dtype)
        streams[:1, :, m : 2 * m] = token_cond
        streams[:1, :, 3 * m : 4 * m] = flow.speaker_condition(self.speaker, 1)[:, None, :]
        if self.prompt_mel is not None and start < self.prompt_frames:
            prompt = self.prompt_mel[start : min(end, self.prompt_frames)]
            streams[0, : len(prompt), 4 * m :] = prompt.to(flow.dtype)
        if self.noise is not None:
            x = self.noise[start:end][None].to(flow.dtype)
        else:
            x = torch.randn(1, n, m, generator=self.generator).to(device=flow.device, dtype=flow.dtype)
        # This chunk sees itself and left_chunks chunks before it (all when negative), cached per Euler step.
        first_key = 0
        if self.left_chunks >= 0:
            first_key = max((start // self.chunk_frames - self.left_chunks) * self.chunk_frames, 0)
        allowed = (torch.arange(end, device=flow.device) >= first_key)[None, None, None, :]
        bias = flow._bias(allowed.expand(2, 1, n, end))
        positions = torch.arange(start, end, device=flow.device)[None].expand(2, n)
        for k, (t, dt) in enumerate(self.schedule):
            if self.caches[k] is None:
                self.caches[k] = DynamicCache()
            streams[:, :, :m] = x
            streams[:, :, 2 * m : 3 * m] = flow.time_condition(t.reshape(1))[:, None, :]
            v = flow.velocity(streams, bias, positions=positions, cache=self.caches[k])
            x = x + dt * ((1.0 + self.cfg_rate) * v[:1] - self.cfg_rate * v[1:])
        return x[0, max(self.prompt_frames - start, 0) :]


def stream_mel(flow_stream: FlowStream, code_chunks) -> Iterator[Tensor]:
    """Drive a FlowStream over an iterable of code tensors, yielding each non-empty mel piece (F, M)."""
    for codes in code_chunks:
        piece = flow_stream.push(codes)
        if len(piece):
            yield piece
    piece = flow_stream.finish()
    if len(piece):
        yield piece

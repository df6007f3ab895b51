"""FlexTok (Bachmann et al., ICML 2025, arXiv 2502.13967): 1 to 256 ordered tokens per image.

A clean reimplementation of apple/ml-flextok, written from its paper, its released configs and our
parity fixtures. Shape letters: B batch, C latent channels, h/w latent size, P patch tokens,
R registers, D width, L FSQ dims (6).

    image (B, 3, H, W) in [-1, 1]
      -> VAE (diffusers AutoencoderKL, posterior mode) * scaling_factor -> latents (B, C, H/8, W/8)
      -> encoder: 2x2 latent patches + R learned registers, causal-last mask, transformer
      -> parameter-free LN + Linear(D, 6) on the registers -> FSQ [8,8,8,5,5,5] -> ids (B, R), 64,000 values
    ids[:, :k]
      -> decoder: FSQ codes -> Linear(6, D) + register positions; registers >= k become the mask token
      -> rectified flow on the latents, Euler from t=1 (noise) to 0, CFG or APG against a null condition
      -> VAE decode -> image

Any prefix of the ids is a valid, coarser description of the image (nested dropout at training).
Unlike upstream, a batch is one tensor (B, ...) run as a real batch dimension, the CFG pair is one
forward of batch 2B, and attention goes through SDPA; decode noise is per image, so an image's
reconstruction does not depend on the batch it sits in (``noise="upstream"`` reproduces upstream's
batch-position noise).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vision.base import ImageTokenizer, check_image_batch
from vision.flextok.config import FlexTokConfig
from vision.flextok.layers import (
    AdaLNBlock,
    Block,
    TimestepEmbedder,
    patchify,
    plain_layer_norm,
    sincos_table_2d,
    unpatchify,
)
from vision.flextok.upstream import (
    convert_state_dict,
    is_upstream_folder,
    parse_upstream_config,
    read_upstream_metadata,
    upstream_config_from_folder,
)
from vision.flextok.vae import autoencoder_kl
from zoo.api import Tokens, accelerator_autocast, inference
from zoo.errors import InputError, ModelFileNotFoundError
from zoo.hub import load_state_dict_strict, read_safetensors
from zoo.quant import FSQ, check_ids

logger = logging.getLogger(__name__)


def build_vae(config: FlexTokConfig) -> nn.Module:
    """The VAE as a diffusers AutoencoderKL built from config (no download)."""
    return autoencoder_kl(
        config.vae_block_out_channels, config.vae_layers_per_block, config.latent_channels, config.vae_norm_num_groups
    )


def causal_last_mask(num_patches: int, num_registers: int, device: torch.device) -> Tensor:
    """(N, N) bool, True = may attend. Patches see all patches; register i sees patches and registers <= i."""
    n = num_patches + num_registers
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    mask[:, :num_patches] = True
    mask[num_patches:, num_patches:] = torch.ones(num_registers, num_registers, device=device).tril().bool()
    return mask


class FlexTokEncoder(nn.Module):
    """Latents (B, C, h, w) -> register vectors (B, R, L) before FSQ."""

    def __init__(self, config: FlexTokConfig):
        super().__init__()
        d, (ph, pw) = config.encoder_dim, config.patch_size
        self.patch_size = config.patch_size
        self.patch_proj = nn.Linear(config.latent_channels * ph * pw, d)
        # Fixed table, stored in checkpoints (upstream keeps it in the state_dict), so it is persistent.
        self.register_buffer("patch_posemb", sincos_table_2d(d, *config.posemb_grid))
        self.registers = nn.Parameter(torch.randn(config.num_registers, d) * 0.02)
        self.transformer = nn.ModuleDict(
            {
                "blocks": nn.ModuleList(
                    Block(d, config.encoder_head_dim, config.mlp_ratio) for _ in range(config.encoder_depth)
                )
            }
        )
        self.to_latents = nn.Linear(d, len(config.fsq_levels))

    def forward(self, latents: Tensor, return_trunk: bool = False):
        b, _, h, w = latents.shape
        grid = (h // self.patch_size[0], w // self.patch_size[1])
        if not torch.is_autocast_enabled(latents.device.type):
            latents = latents.to(self.patch_proj.weight.dtype)
        patches = self.patch_proj(patchify(latents, self.patch_size))  # (B, P, D)
        pos = self.patch_posemb[0, :, : grid[0], : grid[1]].flatten(1).T  # (P, D)
        patches = patches + pos.to(patches.dtype)
        registers = self.registers.to(patches.dtype).expand(b, -1, -1)  # (B, R, D)
        x = torch.cat([patches, registers], dim=1)  # (B, P + R, D)
        mask = causal_last_mask(patches.shape[1], registers.shape[1], x.device)
        for block in self.transformer["blocks"]:
            x = block(x, mask)
        trunk_patches, trunk_registers = x[:, : patches.shape[1]], x[:, patches.shape[1] :]
        out = self.to_latents(plain_layer_norm(trunk_registers))  # (B, R, L)
        if return_trunk:
            return out, trunk_registers, trunk_patches
        return out


class FlexTokDecoder(nn.Module):
    """Velocity of the rectified flow: v(x_t, t | FSQ codes of the first k registers)."""

    def __init__(self, config: FlexTokConfig):
        super().__init__()
        d, (ph, pw) = config.decoder_dim, config.patch_size
        self.patch_size, self.channels = config.patch_size, config.latent_channels
        self.from_latents = nn.Linear(len(config.fsq_levels), d)
        self.register_posemb = nn.Parameter(torch.randn(1, 1, d, config.num_registers) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        if config.null_condition == "learned":
            self.null_cond = nn.Parameter(torch.randn(d) * 0.02)
        else:
            self.null_cond = None
        self.patch_proj = nn.Linear(config.latent_channels * ph * pw, d)
        self.register_buffer("patch_posemb", sincos_table_2d(d, *config.posemb_grid))
        self.time_embedder = TimestepEmbedder(d, config.time_frequency_dim, config.time_max_period, config.max_timestep)
        self.transformer = nn.ModuleDict(
            {
                "blocks": nn.ModuleList(
                    AdaLNBlock(d, config.decoder_head_dim, config.mlp_ratio, config.adaln_groups)
                    for _ in range(config.decoder_depth)
                )
            }
        )
        self.to_patches = nn.Linear(d, config.latent_channels * ph * pw)

    def condition(self, codes: Tensor, keep: Tensor, uncond: Tensor) -> Tensor:
        """(B, R, L) codes, (B,) kept count, (B,) bool unconditional -> (B, R, D) register inputs."""
        r = codes.shape[1]
        x = self.from_latents(codes.to(self.from_latents.weight.dtype))
        x = x + self.register_posemb[0, 0, :, :r].T.to(x.dtype)  # (B, R, D)
        dropped = torch.arange(r, device=x.device)[None, :] >= keep[:, None]  # (B, R)
        x = torch.where(dropped[..., None], self.mask_token.to(x.dtype), x)
        null = self.null_cond.to(x.dtype) if self.null_cond is not None else torch.zeros_like(x[0, 0])
        return torch.where(uncond[:, None, None], null, x)

    def forward(self, x_t: Tensor, t: Tensor, codes: Tensor, keep: Tensor, uncond: Tensor) -> Tensor:
        """x_t (B, C, h, w), t (B,), codes (B, R, L), keep (B,) int, uncond (B,) bool -> velocity (B, C, h, w)."""
        _, _, h, w = x_t.shape
        grid = (h // self.patch_size[0], w // self.patch_size[1])
        dtype = self.patch_proj.weight.dtype if not torch.is_autocast_enabled(x_t.device.type) else x_t.dtype
        patches = self.patch_proj(patchify(x_t.to(dtype), self.patch_size))  # (B, P, D)
        patches = patches + self.patch_posemb[0, :, : grid[0], : grid[1]].flatten(1).T.to(patches.dtype)
        registers = self.condition(codes, keep, uncond).to(patches.dtype)
        seq = torch.cat([patches, registers], dim=1)  # (B, P + R, D)
        temb = self.time_embedder(t)  # (B, D)
        sizes = (patches.shape[1], registers.shape[1])
        for block in self.transformer["blocks"]:
            seq = block(seq, temb, sizes)
        out = self.to_patches(plain_layer_norm(seq[:, : patches.shape[1]]))
        return unpatchify(out, grid, self.patch_size, self.channels)


# ---- guidance -----------------------------------------------------------------------------------
class AdaptiveProjectedGuidance:
    """APG (Sadat et al., arXiv 2410.02416) as FlexTok uses it, one momentum buffer per image.

    diff = c - u, averaged with momentum, clipped to L2 norm ``norm_threshold`` per image, and only
    its component orthogonal to c (projection in float64) is added: v = c + (g - 1) * orth.
    """

    def __init__(self, momentum: float = -0.5, norm_threshold: float = 2.5):
        self.momentum, self.norm_threshold = momentum, norm_threshold
        self.running: Tensor | None = None

    def __call__(self, cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
        dims = tuple(range(1, cond.dim()))
        diff = cond - uncond
        self.running = diff if self.running is None else diff + self.momentum * self.running
        diff = self.running
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        c64, d64 = cond.double(), diff.double()
        c_hat = torch.nn.functional.normalize(c64.flatten(1), dim=1).view_as(c64)
        parallel = (d64 * c_hat).sum(dim=dims, keepdim=True) * c_hat
        orthogonal = (d64 - parallel).to(diff.dtype)
        return cond + (scale - 1) * orthogonal


# ---- the zoo model ------------------------------------------------------------------------------
GuidanceArg = float | Callable[[float], float]


class FlexTok(ImageTokenizer):
    """FlexTok image tokenizer: ``encode(images) -> Tokens`` (ids (B, R)), ``decode(tokens) -> images``."""

    arch: ClassVar[str] = "flextok"
    config_class: ClassVar[type] = FlexTokConfig
    supports_decode: ClassVar[bool] = True
    supports_training: ClassVar[bool] = True

    def __init__(self, config: FlexTokConfig, *, device=None, dtype=None):
        super().__init__(config)
        with self.building(device, dtype):
            self.vae = build_vae(config)
            self.encoder = FlexTokEncoder(config)
            self.decoder = FlexTokDecoder(config)
            self.fsq = FSQ(config.fsq_levels)  # default bound_scale 1 + 1e-3 is upstream's

    # ---- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: Path, source=None, revision=None, *, device=None, dtype=None) -> FlexTok:
        """A zoo folder (config.json names ``arch``) or an upstream Hub folder (``_target_`` config).

        Upstream folders are parsed through the allowlist in ``vision.flextok.upstream``, never instantiated.
        """
        folder = Path(folder)
        if is_upstream_folder(folder):
            config = upstream_config_from_folder(folder)
            where = source or str(folder)
            return cls.from_upstream(folder / "model.safetensors", config, where, revision, device=device, dtype=dtype)
        return super().from_folder(folder, source=source, revision=revision, device=device, dtype=dtype)

    @classmethod
    def from_upstream(
        cls,
        weights: Path,
        config: Mapping[str, Any] | None = None,
        source: str | None = None,
        revision: str | None = None,
        *,
        device=None,
        dtype=None,
    ) -> FlexTok:
        """Our model from an upstream safetensors file: its config (``config``, else the file's metadata)
        checked by ``parse_upstream_config``, its weights renamed by ``convert_state_dict`` and loaded strictly."""
        from safetensors import safe_open

        weights = Path(weights)
        if not weights.is_file():
            raise ModelFileNotFoundError(source or str(weights.parent), weights.name, revision)
        if config is None:
            config = read_upstream_metadata(weights)
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("vae.vae.")}
        model = cls.empty(parse_upstream_config(config, shapes))
        state = convert_state_dict(read_safetensors(weights, source, device=device))
        load_state_dict_strict(model, state, weights.name, source, dtype=dtype)
        return model.eval()

    def check_images(self, images: Tensor) -> Tensor:
        check_image_batch(images, self.config.pixels_per_patch)
        ph, pw = self.config.pixels_per_patch
        gh, gw = self.config.posemb_grid
        h, w = images.shape[-2:]
        if h // ph > gh or w // pw > gw:
            raise InputError(
                f"image size {h}x{w} exceeds the positional table of {gh * ph}x{gw * pw} pixels this model covers"
            )
        return images

    # ---- encode ----------------------------------------------------------------------------------
    def vae_encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> scaled latents (B, C, H/f, W/f), VAE in float32 as upstream."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
            latents = dist.mode()
        return latents.float() * self.config.vae_scaling_factor

    def vae_decode(self, latents: Tensor) -> Tensor:
        with torch.autocast(device_type=latents.device.type, enabled=False):
            z = (latents.float() / self.config.vae_scaling_factor).to(self.vae.dtype)
            return self.vae.decode(z.contiguous()).sample.float()

    def tokenize_latents(self, latents: Tensor, autocast_dtype: str | None = None) -> tuple[Tensor, Tensor]:
        """Scaled latents -> (FSQ codes (B, R, L), ids (B, R) int64)."""
        with self.autocast(latents.device, autocast_dtype):
            pre = self.encoder(latents)
        return self.fsq.quantize(pre.float())

    @inference
    def encode(
        self, images: Any, k: int | Sequence[int] | Tensor | None = None, autocast_dtype: str | None = None
    ) -> Tokens:
        """Images -> Tokens with ids (B, R); ``k`` (int or one per image) keeps the first k via the mask.

        ``autocast_dtype`` overrides ``config.autocast_dtype`` for this call (accelerators only)."""
        images = self.check_images(self.preprocess(images).to(self.device))
        _, ids = self.tokenize_latents(self.vae_encode(images), autocast_dtype)
        b, r = ids.shape
        keep = self._keep_counts(k, b, r, ids.device)
        mask = torch.arange(r, device=ids.device)[None, :] < keep[:, None]
        return Tokens(ids=ids, mask=mask, meta={"image_size": list(images.shape[-2:])})

    @staticmethod
    def _keep_counts(k: Any, batch: int, registers: int, device: torch.device) -> Tensor:
        if k is None:
            return torch.full((batch,), registers, dtype=torch.int64, device=device)
        keep = torch.as_tensor(k, dtype=torch.int64, device=device).reshape(-1)
        if keep.numel() == 1:
            keep = keep.expand(batch)
        if keep.numel() != batch:
            raise InputError(f"k must be one int or one per image ({batch}), got {keep.numel()} values")
        if int(keep.min()) < 1 or int(keep.max()) > registers:
            raise InputError(f"k must lie in 1..{registers}, got {keep.tolist()}")
        return keep.clone()

    # ---- decode ----------------------------------------------------------------------------------
    def velocity(
        self, x: Tensor, t: Tensor, codes: Tensor, keep: Tensor, uncond: Tensor, autocast_dtype: str | None = None
    ) -> Tensor:
        with self.autocast(x.device, autocast_dtype):
            return self.decoder(x, t, codes, keep, uncond).float()

    def autocast(self, device: torch.device, autocast_dtype: str | None = None):
        """Autocast for the token transformers on accelerators, in ``autocast_dtype`` (default
        ``config.autocast_dtype``; "float32" turns it off); plain float32 on CPU, and for the VAE, FSQ
        rounding and the Euler update, which run outside it."""
        return accelerator_autocast(device, autocast_dtype or self.config.autocast_dtype)

    def sample_latents(
        self,
        codes: Tensor,
        keep: Tensor,
        noise: Tensor,
        steps: int,
        guidance: GuidanceArg = 1.0,
        apg: bool = False,
        autocast_dtype: str | None = None,
    ) -> Tensor:
        """Euler on t = i/steps for i = steps..1: x <- x - v(x, t)/steps, from ``noise`` to latents.

        ``guidance`` is a number or a function of t. At exactly 1.0 (not callable) one conditional pass
        per step; otherwise conditional and null-condition passes run as one batch of 2B.
        """
        b = noise.shape[0]
        x = noise.float()
        dt = 1.0 / steps
        use_cfg = callable(guidance) or guidance != 1.0
        apg_state = AdaptiveProjectedGuidance(self.config.apg_momentum, self.config.apg_norm_threshold)
        if use_cfg:
            codes2, keep2 = torch.cat([codes, codes]), torch.cat([keep, keep])
            uncond2 = torch.arange(2 * b, device=x.device) >= b
        no_uncond = torch.zeros(b, dtype=torch.bool, device=x.device)
        for i in range(steps, 0, -1):
            t = i / steps
            if use_cfg:
                t2 = torch.full((2 * b,), t, dtype=torch.float32, device=x.device)
                cond, uncond = self.velocity(torch.cat([x, x]), t2, codes2, keep2, uncond2, autocast_dtype).chunk(2)
                scale = guidance(t) if callable(guidance) else guidance
                v = apg_state(cond, uncond, scale) if apg else uncond + scale * (cond - uncond)
            else:
                tb = torch.full((b,), t, dtype=torch.float32, device=x.device)
                v = self.velocity(x, tb, codes, keep, no_uncond, autocast_dtype)
            x = x - dt * v.float()
        return x

    def draw_noise(
        self, ids: Tensor, keep: Tensor, latent_hw: tuple[int, int], seed: int | Tensor, mode: str
    ) -> Tensor:
        """(B, C, h, w) float32 noise drawn on the CPU (identical on every device).

        ``mode="per_image"``: image i's generator is seeded from ``seed`` and its own kept ids, so it
        gets the same noise in any batch. ``mode="upstream"``: one generator seeded ``seed`` draws for
        each image in batch order, as upstream does (noise then depends on batch position).
        A (B,) tensor ``seed`` gives each image its own seed.
        """
        b = ids.shape[0]
        shape = (1, self.config.latent_channels, *latent_hw)
        if mode == "upstream":
            if isinstance(seed, Tensor):
                raise InputError("noise='upstream' takes one int seed for the whole batch")
            g = torch.Generator().manual_seed(int(seed))
            return torch.cat([torch.randn(shape, generator=g) for _ in range(b)])
        if mode != "per_image":
            raise InputError(f"noise must be 'per_image', 'upstream' or a tensor, got {mode!r}")
        seeds = torch.as_tensor(seed, dtype=torch.int64).reshape(-1)
        if seeds.numel() not in (1, b):
            raise InputError(f"seed must be one int or one per image ({b}), got {seeds.numel()}")
        from vision.base import content_generator

        out = []
        for i in range(b):
            g = content_generator(int(seeds[i if seeds.numel() == b else 0]), ids[i, : int(keep[i])])
            out.append(torch.randn(shape, generator=g))
        return torch.cat(out)

    @inference
    def decode(
        self,
        tokens: Tokens,
        steps: int | None = None,
        guidance: GuidanceArg | None = None,
        apg: bool | None = None,
        seed: int | Tensor = 0,
        noise: str | Tensor = "per_image",
        image_size: tuple[int, int] | None = None,
        return_latents: bool = False,
        autocast_dtype: str | None = None,
    ):
        """Tokens (ids (B, N), mask = kept prefix) -> images (B, 3, H, W) in about [-1, 1].

        steps/guidance/apg default to the config's. ``guidance`` may be a function of t (a per-step
        schedule). ``noise``: "per_image" (default), "upstream" or a (B, C, h, w) tensor to inject.
        The kept count of each image is its mask's length; the mask must be a prefix.
        ``autocast_dtype`` overrides ``config.autocast_dtype`` for this call (accelerators only).
        """
        ids, keep = self._check_tokens(tokens)
        steps = self.config.decode_steps if steps is None else int(steps)
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        guidance = self.config.guidance if guidance is None else guidance
        apg = self.config.apg if apg is None else apg
        h, w = image_size or tokens.meta.get("image_size") or (self.config.image_size,) * 2
        f = self.config.vae_downsample
        latent_hw = (int(h) // f, int(w) // f)
        ph, pw = self.config.patch_size
        gh, gw = self.config.posemb_grid
        if latent_hw[0] < ph or latent_hw[1] < pw or latent_hw[0] % ph or latent_hw[1] % pw:
            raise InputError(f"image_size {h}x{w} must be a positive multiple of {self.config.pixels_per_patch}")
        if latent_hw[0] // ph > gh or latent_hw[1] // pw > gw:
            raise InputError(f"image_size {h}x{w} exceeds the positional table this model covers")
        device = self.device
        if isinstance(noise, Tensor):
            expected = (ids.shape[0], self.config.latent_channels, *latent_hw)
            if tuple(noise.shape) != expected:
                raise InputError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
            x0 = noise.float()
        else:
            x0 = self.draw_noise(ids, keep, latent_hw, seed, noise)
        codes = self.fsq.ids_to_codes(ids.to(device))
        latents = self.sample_latents(codes, keep.to(device), x0.to(device), steps, guidance, apg, autocast_dtype)
        images = self.vae_decode(latents)
        return (images, latents) if return_latents else images

    def _check_tokens(self, tokens: Tokens) -> tuple[Tensor, Tensor]:
        """-> ids (B, R) right-padded with 0, keep (B,) int64."""
        if not isinstance(tokens, Tokens):
            raise InputError(f"decode takes zoo.Tokens, got {type(tokens).__name__}")
        if tokens.ids is None:
            raise InputError("FlexTok decodes discrete ids; these Tokens hold embeddings only")
        ids, mask = tokens.ids, tokens.mask
        r = self.config.num_registers
        if ids.shape[1] > r:
            raise InputError(f"at most {r} tokens per image, got {ids.shape[1]}")
        keep = mask.sum(dim=1)
        prefix = torch.arange(ids.shape[1], device=mask.device)[None, :] < keep[:, None]
        if not torch.equal(prefix, mask):
            raise InputError("the token mask must keep a prefix of each sequence (FlexTok tokens are ordered)")
        if int(keep.min()) < 1:
            raise InputError("every image needs at least 1 token (k must lie in 1..num_registers)")
        check_ids(torch.where(mask, ids, torch.zeros_like(ids)), self.fsq.codebook_size)
        padded = torch.zeros(ids.shape[0], r, dtype=torch.int64, device=ids.device)
        padded[:, : ids.shape[1]] = torch.where(mask, ids, torch.zeros_like(ids))
        return padded, keep.to(torch.int64)

    # ---- training --------------------------------------------------------------------------------
    def training_loss(self, batch: Any) -> Tensor:
        """Rectified-flow loss with nested dropout and null-condition dropout (REPA omitted).

        ``batch``: images (B, 3, H, W) in [-1, 1] or a dict with "images" (or "latents": scaled VAE
        latents, to train the tokenizer on cached latents). The VAE stays frozen.
        """
        if isinstance(batch, dict):
            latents = batch.get("latents")
            images = batch.get("images")
        else:
            latents, images = None, batch
        if latents is None:
            with torch.no_grad():
                latents = self.vae_encode(self.check_images(images))
        b, r = latents.shape[0], self.config.num_registers
        codes, _ = self.fsq.quantize(self.encoder(latents))
        keep = torch.randint(1, r + 1, (b,), device=latents.device)  # uniform nested dropout
        uncond = torch.rand(b, device=latents.device) < 0.2
        sigma = torch.sigmoid(torch.randn(b, device=latents.device))  # logit-normal t
        noise = torch.randn_like(latents)
        x_t = sigma[:, None, None, None] * noise + (1 - sigma[:, None, None, None]) * latents
        v = self.decoder(x_t, sigma, codes, keep, uncond)
        return torch.mean((v.float() - (noise - latents)) ** 2)


def count_image_tokens_bits(config: FlexTokConfig) -> float:
    """Bits per token: log2 of the FSQ codebook size (64,000 -> 15.97)."""
    return math.log2(math.prod(config.fsq_levels))

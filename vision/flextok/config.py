"""FlexTok's configuration: one frozen dataclass, config.json as written by ``save_pretrained``."""

from __future__ import annotations

from dataclasses import dataclass

from zoo.api import AUTOCAST_DTYPES
from zoo.errors import ConfigError

LICENSE_NOTE = (
    "Apple Machine Learning Research Model is licensed under the Apple Machine Learning Research Model License "
    "Agreement (research purposes only)."
)


@dataclass(frozen=True)
class FlexTokConfig:
    """FlexTok hyperparameters. Defaults are the released d12_d12 ImageNet model's structure.

    The released configs carry their own VAE scaling factor; ``convert.py`` reads every field from
    the checkpoint's config and weight shapes, never from these defaults.
    """

    # VAE: diffusers AutoencoderKL with len(vae_block_out_channels) levels (downsampling 2^(levels-1)).
    vae_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # SDXL-VAE widths (upstream VAE_BASE_CFG)
    vae_layers_per_block: int = 2
    vae_norm_num_groups: int = 32
    latent_channels: int = 16
    vae_scaling_factor: float = 1.0  # latents are multiplied by this after the posterior mode
    vae_sample_posterior: bool = False  # True makes tokenization stochastic; the zoo encodes the mode
    # Token transformers
    patch_size: tuple[int, int] = (2, 2)
    posemb_grid: tuple[int, int] = (16, 16)  # sin-cos table in patches: 16x16 patches = 256 px at f8
    encoder_dim: int = 768
    encoder_depth: int = 12
    encoder_head_dim: int = 64
    decoder_dim: int = 768
    decoder_depth: int = 12
    decoder_head_dim: int = 64
    mlp_ratio: float = 4.0
    num_registers: int = 256
    fsq_levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # 64,000 ids
    null_condition: str = "learned"  # "learned" (one vector) or "zero" for the CFG unconditional pass
    adaln_groups: int = 2  # separate modulation for patches and registers
    time_frequency_dim: int = 256
    time_max_period: float = 256.0
    max_timestep: float = 1.0
    # Preprocessing, precision and sampling defaults
    image_size: int = 256
    # The token transformers run under autocast in this dtype on accelerators ("bfloat16" as upstream
    # trains, or "float32" for none); the VAE, FSQ rounding and the Euler update always run in float32,
    # and so does everything on CPU. encode/decode take ``autocast_dtype=`` to override it per call.
    autocast_dtype: str = "bfloat16"
    decode_steps: int = 25
    guidance: float = 7.5
    apg: bool = True
    apg_momentum: float = -0.5
    apg_norm_threshold: float = 2.5

    def __post_init__(self):
        positive = ("latent_channels", "encoder_dim", "encoder_depth", "decoder_dim", "decoder_depth")
        positive += ("num_registers", "image_size", "decode_steps", "vae_layers_per_block", "time_frequency_dim")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"FlexTokConfig.{name}={getattr(self, name)} must be >= 1")
        for prefix in ("encoder", "decoder"):
            dim, head_dim = getattr(self, f"{prefix}_dim"), getattr(self, f"{prefix}_head_dim")
            if head_dim < 1 or dim % head_dim:
                raise ConfigError(f"FlexTokConfig.{prefix}_head_dim={head_dim} must divide {prefix}_dim={dim}")
            if dim % 4:
                raise ConfigError(f"FlexTokConfig.{prefix}_dim={dim} must be divisible by 4 (2-D sin-cos table)")
        if self.null_condition not in ("learned", "zero"):
            raise ConfigError(f"FlexTokConfig.null_condition={self.null_condition!r} must be 'learned' or 'zero'")
        if not self.vae_block_out_channels or any(c % self.vae_norm_num_groups for c in self.vae_block_out_channels):
            raise ConfigError(
                f"FlexTokConfig.vae_block_out_channels={self.vae_block_out_channels} must be non-empty multiples "
                f"of vae_norm_num_groups={self.vae_norm_num_groups}"
            )
        if len(self.patch_size) != 2 or min(self.patch_size) < 1:
            raise ConfigError(f"FlexTokConfig.patch_size={self.patch_size} must be two positive ints")
        if len(self.fsq_levels) < 1 or min(self.fsq_levels) < 2:
            raise ConfigError(f"FlexTokConfig.fsq_levels={self.fsq_levels} must be integers >= 2")
        if self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ConfigError(
                f"FlexTokConfig.autocast_dtype={self.autocast_dtype!r} must be one of {', '.join(AUTOCAST_DTYPES)}"
            )
        if self.vae_scaling_factor <= 0:
            raise ConfigError(f"FlexTokConfig.vae_scaling_factor={self.vae_scaling_factor} must be > 0")

    @property
    def vae_downsample(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def pixels_per_patch(self) -> tuple[int, int]:
        return (self.vae_downsample * self.patch_size[0], self.vae_downsample * self.patch_size[1])

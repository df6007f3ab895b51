"""FlexTok's standalone VAEs (EPFL-VILAB/flextok_vae_c4|c8|c16) as zoo models.

Each is a diffusers ``AutoencoderKL`` (SDXL-VAE architecture, f8) published as a diffusers folder:
config.json (``_class_name: AutoencoderKL``) + diffusion_pytorch_model.safetensors. We read only the
structural fields we support from that config (everything else is refused or ignored by name),
build the autoencoder from them and load the weights strictly. Tokens are continuous: the posterior
mode, one C-dim embedding per latent pixel, row-major: embeddings (B, h*w, C).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from zoo.api import Tokens, ZooModel, check_float_tensor, inference
from zoo.errors import ConfigError, InputError, ModelFileNotFoundError

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def autoencoder_kl(block_out_channels, layers_per_block: int, latent_channels: int, norm_num_groups: int):
    """FlexTok's VAE structure as a diffusers AutoencoderKL, built from these fields (no download): RGB in and out,
    one down/up block per entry of ``block_out_channels`` (f = 2 ** (levels - 1)), SiLU."""
    from diffusers import AutoencoderKL

    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        act_fn="silu",
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
    )


@dataclass(frozen=True)
class FlexTokVAEConfig:
    """Defaults: the released VAEs' structure (upstream VAE_BASE_CFG) with 16 latent channels."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 16
    image_size: int = 256  # preprocessing: shorter side resized to this, centre crop

    def __post_init__(self):
        if not self.block_out_channels or any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(
                f"FlexTokVAEConfig.block_out_channels={self.block_out_channels} must be multiples of "
                f"norm_num_groups={self.norm_num_groups}"
            )
        if self.latent_channels < 1 or self.layers_per_block < 1:
            raise ConfigError("FlexTokVAEConfig.latent_channels and layers_per_block must be >= 1")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


# diffusers config fields: those we read, and the values we require of the rest.
REQUIRED_DIFFUSERS_VALUES = {
    "_class_name": ("AutoencoderKL",),
    "in_channels": (3,),
    "out_channels": (3,),
    "act_fn": ("silu",),
    "use_quant_conv": (True, None),
    "use_post_quant_conv": (True, None),
    "mid_block_add_attention": (True, None),
}


def config_from_diffusers(data: dict[str, Any], where: str) -> FlexTokVAEConfig:
    for key, allowed in REQUIRED_DIFFUSERS_VALUES.items():
        if data.get(key) not in allowed:
            raise ConfigError(f"{where}: {key}={data.get(key)!r} is not supported (expected one of {list(allowed)})")
    levels = len(data["block_out_channels"])
    if (
        list(data.get("down_block_types", [])) != ["DownEncoderBlock2D"] * levels
        or list(data.get("up_block_types", [])) != ["UpDecoderBlock2D"] * levels
    ):
        raise ConfigError(f"{where}: only DownEncoderBlock2D/UpDecoderBlock2D stacks are supported")
    return FlexTokVAEConfig(
        block_out_channels=tuple(int(c) for c in data["block_out_channels"]),
        layers_per_block=int(data["layers_per_block"]),
        norm_num_groups=int(data.get("norm_num_groups", 32)),
        latent_channels=int(data["latent_channels"]),
    )


class FlexTokVAE(ZooModel):
    """``encode(images) -> Tokens(embeddings=(B, h*w, C))``; ``decode(tokens) -> images (B, 3, H, W)``."""

    arch: ClassVar[str] = "flextok-vae"
    modality: ClassVar[str] = "image"
    config_class: ClassVar[type] = FlexTokVAEConfig
    hub_files: ClassVar[tuple[str, ...]] = ("config.json", DIFFUSERS_WEIGHTS)

    def __init__(self, config: FlexTokVAEConfig):
        super().__init__(config)
        self.vae = autoencoder_kl(
            config.block_out_channels, config.layers_per_block, config.latent_channels, config.norm_num_groups
        )

    @classmethod
    def from_folder(cls, folder: Path, source: str | None = None, revision: str | None = None) -> FlexTokVAE:
        """A zoo folder, or a diffusers folder as EPFL-VILAB publishes it (loaded strictly, no renames
        beyond the ``vae.`` prefix)."""
        from zoo.hub import load_state_dict_strict, read_safetensors

        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ModelFileNotFoundError(source or str(folder), "config.json", revision)
        data = json.loads(config_path.read_text())
        if "arch" in data:
            return super().from_folder(folder, source=source, revision=revision)
        model = cls(config_from_diffusers(data, str(config_path)))
        weights = folder / DIFFUSERS_WEIGHTS
        if not weights.is_file():
            raise ModelFileNotFoundError(source or str(folder), DIFFUSERS_WEIGHTS, revision)
        state = {f"vae.{k}": v for k, v in read_safetensors(weights, source).items()}
        load_state_dict_strict(model, state, DIFFUSERS_WEIGHTS, source)
        return model.eval()

    def preprocess(self, raw: Any) -> Tensor:
        from vision.flextok.model import FlexTok

        return FlexTok.preprocess(self, raw)  # same pipeline: resize, centre crop, [-1, 1]

    def sample_inputs(self) -> list[str]:
        """FlexTok's bundled demo images (paths)."""
        from vision.flextok.model import FlexTok

        return FlexTok.sample_inputs(self)

    def postprocess(self, images: Tensor) -> list:
        """(B, 3, H, W) in [-1, 1] -> list of PIL images."""
        from vision.flextok.model import FlexTok

        return FlexTok.postprocess(self, images)

    def check_images(self, images: Tensor) -> Tensor:
        check_float_tensor(images, "images", dims=4)
        _, c, h, w = images.shape
        f = self.config.downsample
        if c != 3:
            raise InputError(f"images must have 3 channels (B, 3, H, W), got {c}")
        if h < f or w < f or h % f or w % f:
            raise InputError(f"image size {h}x{w} must be a positive multiple of {f}")
        if float(images.min()) < -1.001 or float(images.max()) > 1.001:
            raise InputError("images must lie in [-1, 1] (use preprocess() for 0..255 data)")
        return images

    @inference
    def encode(self, images: Any) -> Tokens:
        images = self.check_images(self.preprocess(images).to(self.device))
        latents = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mode().float()  # (B, C, h, w)
        b, c, h, w = latents.shape
        return Tokens(embeddings=latents.flatten(2).transpose(1, 2), meta={"latent_hw": [h, w]})  # (B, h*w, C)

    @inference
    def decode(self, tokens: Tokens) -> Tensor:
        if not isinstance(tokens, Tokens) or tokens.embeddings is None:
            raise InputError("FlexTokVAE decodes Tokens with embeddings (B, h*w, C)")
        h, w = tokens.meta.get("latent_hw", (None, None))
        b, n, c = tokens.embeddings.shape
        if c != self.config.latent_channels or h is None or h * w != n:
            raise InputError(f"expected embeddings (B, h*w, {self.config.latent_channels}) with meta latent_hw")
        latents = tokens.embeddings.transpose(1, 2).reshape(b, c, h, w).to(self.device, self.vae.dtype)
        return self.vae.decode(latents).sample.float()

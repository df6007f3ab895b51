"""Pixel decoders for SEED's generation embedding (B, G).

- ``UnCLIPDecoder`` wraps a diffusers ``StableUnCLIPImg2ImgPipeline``: the release decodes with
  stabilityai/stable-diffusion-2-1-unclip, whose image embedding (OpenCLIP ViT-H, 1024-d) the
  generation embedding imitates. As upstream: empty prompt, ``image_embeds=`` the generation
  embedding, noise level 0, zero negative embedding for guidance (the stock pipeline's and SEED's
  default). Unlike upstream, the batch is generated at once and each image draws its latents and
  its embedding noise from its own generator.
- ``TinyPixelDecoder`` is seed-tiny's decoder: a small diffusers ``UNet2DModel`` in pixel space whose
  time embedding gets a projection of the generation embedding added (``class_embed_type="identity"``),
  trained with the DDPM epsilon loss and 10% null-condition dropout (the zero embedding, the same null
  unCLIP's guidance uses), sampled with DDIM and classifier-free guidance.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import ConfigError

NULL_CONDITION_RATE = 0.1


def ddim_scheduler():
    """The tiny decoder's noise schedule: 1000 steps, cosine betas, epsilon prediction, samples clipped to [-1, 1]."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=True,
        set_alpha_to_one=True,
    )


class TinyPixelDecoder(nn.Module):
    """Generation embedding (B, G) -> images (B, 3, pixel_size, pixel_size) in [-1, 1] by conditional diffusion."""

    def __init__(self, config, device=None, dtype=None):
        super().__init__()
        from diffusers import UNet2DModel

        channels = tuple(config.pixel_channels)
        levels = len(channels)
        time_dim = channels[0] * 4  # UNet2DModel's time-embedding width
        self.size = config.pixel_size
        self.condition = nn.Sequential(
            nn.LayerNorm(config.generation_dim, device=device, dtype=dtype),
            nn.Linear(config.generation_dim, time_dim, device=device, dtype=dtype),
        )
        self.unet = UNet2DModel(
            sample_size=config.pixel_size,
            in_channels=3,
            out_channels=3,
            block_out_channels=channels,
            layers_per_block=config.pixel_layers_per_block,
            down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
            norm_num_groups=config.pixel_norm_groups,
            attention_head_dim=channels[-1] // 2,
            class_embed_type="identity",
        )
        # nn.Module.to, not diffusers' ModelMixin.to: that one warns about float32-only modules whenever a dtype
        # argument is present, even None (UNet2DModel has none).
        nn.Module.to(self.unet, device=device, dtype=dtype)
        self.scheduler = ddim_scheduler()

    def noise_prediction(self, x: Tensor, t: Tensor, embedding: Tensor) -> Tensor:
        """epsilon(x_t, t | embedding); a zero embedding is the null condition."""
        return self.unet(x, t, class_labels=self.condition(embedding)).sample

    def diffusion_loss(self, images: Tensor, embedding: Tensor) -> Tensor:
        """DDPM epsilon MSE on images (B, 3, s, s) in [-1, 1]; the condition is dropped for 10% of images."""
        b = images.shape[0]
        noise = torch.randn_like(images)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=images.device)
        keep = (torch.rand(b, device=images.device) >= NULL_CONDITION_RATE)[:, None]
        condition = torch.where(keep, embedding, torch.zeros_like(embedding))
        x_t = self.scheduler.add_noise(images, noise, t)
        return F.mse_loss(self.noise_prediction(x_t, t, condition).float(), noise.float())

    def sample(self, embedding: Tensor, generators: list[torch.Generator], steps: int, guidance: float) -> Tensor:
        """DDIM from per-image noise; guidance 1 is one conditional pass per step, else cond and null as one batch."""
        b = embedding.shape[0]
        shape = (1, 3, self.size, self.size)
        dtype = self.condition[1].weight.dtype
        x = torch.cat([torch.randn(shape, generator=g) for g in generators]).to(embedding.device, dtype)
        scheduler = ddim_scheduler()  # its own copy: set_timesteps keeps state
        scheduler.set_timesteps(steps, device=embedding.device)
        use_cfg = guidance != 1.0
        condition = torch.cat([embedding, torch.zeros_like(embedding)]) if use_cfg else embedding
        for t in scheduler.timesteps:
            inputs = torch.cat([x, x]) if use_cfg else x
            eps = self.noise_prediction(inputs, t.expand(inputs.shape[0]), condition.to(dtype))
            if use_cfg:
                cond, null = eps.chunk(2)
                eps = null + guidance * (cond - null)
            x = scheduler.step(eps, t, x).prev_sample
        return x.float().clamp(-1, 1)[:b]


class UnCLIPDecoder:
    """A diffusers ``StableUnCLIPImg2ImgPipeline`` driven by generation embeddings (not an nn.Module:
    its weights and their license stay outside the SEED checkpoint)."""

    def __init__(self, pipeline: Any):
        from diffusers import StableUnCLIPImg2ImgPipeline

        if not isinstance(pipeline, StableUnCLIPImg2ImgPipeline):
            raise ConfigError(
                f"attach_unclip needs a diffusers StableUnCLIPImg2ImgPipeline, got {type(pipeline).__name__}"
            )
        self.pipeline = pipeline
        self.embedding_dim = int(pipeline.image_normalizer.mean.shape[-1])

    def generate(
        self, embedding: Tensor, generators: list[torch.Generator], steps: int, guidance: float, noise_level: int
    ) -> Tensor:
        """(B, G) generation embeddings -> (B, 3, H, W) in [-1, 1] at the pipeline's default size.

        Image i's embedding noise and latents come from ``generators[i]`` alone (the pipeline draws
        per generator), so an image comes out the same in any batch.
        """
        pipe = self.pipeline
        pipe.set_progress_bar_config(disable=True)
        images = pipe(
            prompt=[""] * embedding.shape[0],  # upstream's empty prompt, once per image
            image_embeds=embedding.to(device=pipe.unet.device, dtype=pipe.unet.dtype),
            noise_level=noise_level,
            guidance_scale=guidance,
            num_inference_steps=steps,
            generator=generators,
            output_type="pt",
        ).images
        return (images.float() * 2 - 1).clamp(-1, 1)

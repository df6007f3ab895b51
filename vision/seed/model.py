"""SEED (Ge et al., arXiv 2307.08041; SEED-LLaMA, ICLR 2024, arXiv 2310.01218): 32 causal tokens per image.

A clean reimplementation of the SEED-LLaMA image tokenizer ("SEED-2", AILab-CVC/SEED branch main),
written from upstream's code, its release files and our parity fixtures. Shape letters: B batch,
S image side, P patches (+1 CLS), E ViT width, Q query tokens (32), W Q-Former width, D code width,
K codebook size, G generation-embedding width (1024).

    image (B, 3, S, S), squashed to S x S with PIL bicubic, CLIP mean/std
      -> EVA ViT-g as BLIP-2 runs it (timm ``Eva``: 39 blocks, q/v biases, no final norm, CLS kept) (B, P+1, E)
      -> ln_vision (float32)
      -> causal Q-Former: Q learned queries, causal self-attention among them, cross-attention to the
         image every second layer, query FFN; post-LN BERT layers                          (B, Q, W)
      -> encode_task_layer Linear-Tanh-Linear (B, Q, D) -> nearest of K codes by L2      ids (B, Q)
    ids
      -> codebook rows -> decode_task_layer -> + pos_embed_image -> blocks_image (timm ViT blocks)
      -> image_down MLP (B, Q, 32) -> flatten -> distill_image_proj    generation embedding (B, G)
      -> a pixel decoder: SD-2.1 unCLIP (attached, see ``attach_unclip``) or the tiny UNet of seed-tiny

``pos_embed`` and ``blocks`` reconstruct the causal Q-Former embeddings from the codes: upstream
trains them (stage II) and ships them; inference does not use them, ``training_loss`` does.
Unlike upstream, attention runs through SDPA, a batch is one tensor, and decoding draws its noise
per image from ``seed`` and the image's own ids, so an image decodes the same alone or in a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.base import ImageTokenizer, content_generator, read_image
from zoo.api import AUTOCAST_DTYPES, Tokens, accelerator_autocast, check_float_tensor, inference
from zoo.errors import ConfigError, InputError, NotSupportedError
from zoo.quant import VectorQuantizer, check_ids

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAMPLES = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class SEEDConfig:
    """SEED tokenizer hyperparameters. Defaults are the released SEED-LLaMA tokenizer (seed-tokenizer-2).

    Attention head counts live in no weight: ``convert.py`` takes them from the release config.
    """

    # EVA ViT (BLIP-2's eva_vit_g): EVA-CLIP-g has 40 blocks; BLIP-2 and SEED run the first 39.
    image_size: int = 224  # preprocessing squashes to image_size x image_size
    patch_size: int = 14
    vit_width: int = 1408
    vit_depth: int = 39
    vit_heads: int = 16
    vit_mlp_hidden: int = 6144  # int(1408 * 4.3637)
    # Causal Q-Former (BERT-base without its text branch)
    qformer_width: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_intermediate: int = 3072
    cross_attention_freq: int = 2  # layers 0, 2, 4, ... attend to the image
    num_query_tokens: int = 32
    causal_queries: bool = True  # upstream switches the causal mask on when exactly 32 queries are passed
    # Vector quantizer
    codebook_size: int = 8192
    codebook_dim: int = 32
    # De-tokenizer to the generation embedding (OpenCLIP ViT-H image-embedding space for SD-2.1 unCLIP)
    detok_depth: int = 4
    detok_heads: int = 12  # hard-coded upstream, whatever the width
    image_down_dims: tuple[int, ...] = (256, 128, 32)  # Linear(W, 256) ReLU Linear(256, 128) ReLU Linear(128, 32)
    generation_dim: int = 1024
    # Pixel decoder carried in the weights: "none" (attach unCLIP) or "unet" (tiny diffusers UNet2DModel)
    pixel_decoder: str = "none"
    pixel_size: int = 32
    pixel_channels: tuple[int, ...] = (32, 64)
    pixel_layers_per_block: int = 1
    pixel_norm_groups: int = 8
    # The ViT, Q-Former and de-tokenizer run under autocast in this dtype on accelerators (upstream runs
    # them in fp16 on CUDA; "float32" for none); ln_vision and the VQ search stay float32, as does all of
    # it on CPU. encode/decode take ``autocast_dtype=`` to override it per call.
    autocast_dtype: str = "bfloat16"
    # Decoding defaults: upstream's unCLIP call (20 steps, guidance 10, noise level 0)
    decode_steps: int = 20
    guidance: float = 10.0
    noise_level: int = 0

    def __post_init__(self):
        positive = ("image_size", "patch_size", "vit_width", "vit_depth", "vit_heads", "vit_mlp_hidden")
        positive += ("qformer_width", "qformer_layers", "qformer_heads", "qformer_intermediate")
        positive += ("cross_attention_freq", "num_query_tokens", "codebook_size", "codebook_dim")
        positive += ("detok_heads", "generation_dim", "decode_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"SEEDConfig.{name}={getattr(self, name)} must be >= 1")
        if self.detok_depth < 0:
            raise ConfigError(f"SEEDConfig.detok_depth={self.detok_depth} must be >= 0")
        for width, heads in (("vit_width", "vit_heads"), ("qformer_width", "qformer_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ConfigError(
                    f"SEEDConfig.{heads}={getattr(self, heads)} must divide {width}={getattr(self, width)}"
                )
        if self.qformer_width % self.detok_heads:
            raise ConfigError(
                f"SEEDConfig.detok_heads={self.detok_heads} must divide qformer_width={self.qformer_width} "
                "(the de-tokenizer blocks run at the Q-Former width)"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"SEEDConfig.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )
        if not self.image_down_dims or min(self.image_down_dims) < 1:
            raise ConfigError(f"SEEDConfig.image_down_dims={self.image_down_dims} must be positive widths")
        if self.pixel_decoder not in ("none", "unet"):
            raise ConfigError(f"SEEDConfig.pixel_decoder={self.pixel_decoder!r} must be 'none' or 'unet'")
        if self.pixel_decoder == "unet":
            if any(c % self.pixel_norm_groups for c in self.pixel_channels) or not self.pixel_channels:
                raise ConfigError(
                    f"SEEDConfig.pixel_channels={self.pixel_channels} must be multiples of "
                    f"pixel_norm_groups={self.pixel_norm_groups}"
                )
            if self.pixel_size % 2 ** (len(self.pixel_channels) - 1):
                raise ConfigError(
                    f"SEEDConfig.pixel_size={self.pixel_size} must halve {len(self.pixel_channels) - 1} times"
                )
        if self.noise_level < 0:
            raise ConfigError(f"SEEDConfig.noise_level={self.noise_level} must be >= 0")
        if self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ConfigError(
                f"SEEDConfig.autocast_dtype={self.autocast_dtype!r} must be one of {', '.join(AUTOCAST_DTYPES)}"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def cross_attention_layers(self) -> list[int]:
        return [i for i in range(self.qformer_layers) if i % self.cross_attention_freq == 0]


# ---- the causal Q-Former ------------------------------------------------------------------------
class QFormerAttention(nn.Module):
    """BERT attention with its post-LN residual: LN(dense(attention(x, context)) + x), eps 1e-12.

    Self-attention when ``context`` is None (optionally causal), else cross-attention to ``context``
    (keys and values are Linear(context width, W) of it; every context token is visible).
    """

    def __init__(self, width: int, heads: int, context_width: int, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads = heads
        self.query = nn.Linear(width, width, **dd)
        self.key = nn.Linear(context_width, width, **dd)
        self.value = nn.Linear(context_width, width, **dd)
        self.dense = nn.Linear(width, width, **dd)
        self.norm = nn.LayerNorm(width, eps=1e-12, **dd)

    def forward(self, x: Tensor, context: Tensor | None = None, causal: bool = False) -> Tensor:
        source = x if context is None else context

        def heads(t: Tensor) -> Tensor:  # (B, N, W) -> (B, heads, N, W / heads)
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(source)), heads(self.value(source))
        # Upstream adds (1 - m) * -10000 to the scores of future queries; after softmax that is exactly 0, as here.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and context is None)
        return self.norm(self.dense(out.transpose(1, 2).flatten(2)) + x)


class QFormerLayer(nn.Module):
    """Self-attention among the queries, cross-attention to the image (every ``cross_attention_freq``-th
    layer), then the query FFN: LN(output_query(GELU(intermediate_query(x))) + x)."""

    def __init__(self, config: SEEDConfig, cross: bool, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        w = config.qformer_width
        self.attention = QFormerAttention(w, config.qformer_heads, w, **dd)
        self.crossattention = QFormerAttention(w, config.qformer_heads, config.vit_width, **dd) if cross else None
        self.intermediate_query = nn.Linear(w, config.qformer_intermediate, **dd)
        self.output_query = nn.Linear(config.qformer_intermediate, w, **dd)
        self.output_norm = nn.LayerNorm(w, eps=1e-12, **dd)

    def forward(self, x: Tensor, image: Tensor, causal: bool) -> Tensor:
        x = self.attention(x, causal=causal)
        if self.crossattention is not None:
            x = self.crossattention(x, context=image)
        return self.output_norm(self.output_query(F.gelu(self.intermediate_query(x))) + x)


class CausalQFormer(nn.Module):
    """Queries (B, Q, W) and image tokens (B, P+1, E) -> causal query embeddings (B, Q, W).

    The queries pass the embeddings LayerNorm first (BERT's, without word or position embeddings).
    """

    def __init__(self, config: SEEDConfig, *, device=None, dtype=None):
        super().__init__()
        self.causal = config.causal_queries
        self.embed_norm = nn.LayerNorm(config.qformer_width, eps=1e-12, device=device, dtype=dtype)
        cross = set(config.cross_attention_layers)
        self.layers = nn.ModuleList(
            QFormerLayer(config, i in cross, device=device, dtype=dtype) for i in range(config.qformer_layers)
        )

    def forward(self, queries: Tensor, image: Tensor) -> Tensor:
        x = self.embed_norm(queries)
        for layer in self.layers:
            x = layer(x, image, self.causal)
        return x


def eva_vit(config: SEEDConfig, device=None, dtype=None) -> nn.Module:
    """BLIP-2's EVA ViT-g as a timm ``Eva``: q/v biases (k bias zero), exact GELU, pre-LN eps 1e-6,
    CLS token and absolute positions, no final norm, no pooling, no head. Upstream names, so the
    LAVIS weights load without renaming."""
    from timm.models.eva import Eva

    ratio = config.vit_mlp_hidden / config.vit_width
    if int(config.vit_width * ratio) != config.vit_mlp_hidden:  # timm sizes the MLP as int(width * ratio)
        ratio = (config.vit_mlp_hidden + 0.5) / config.vit_width
    return Eva(
        img_size=config.image_size,
        patch_size=config.patch_size,
        num_classes=0,
        global_pool="",
        embed_dim=config.vit_width,
        depth=config.vit_depth,
        num_heads=config.vit_heads,
        qkv_bias=True,
        qkv_fused=True,
        mlp_ratio=ratio,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_post_transformer_norm=False,
        use_fc_norm=False,
        device=device,
        dtype=dtype,
    )


def vit_blocks(config: SEEDConfig, depth: int, device=None, dtype=None) -> nn.ModuleList:
    """timm ViT blocks at the Q-Former width: qkv bias, ``detok_heads`` heads, MLP ratio 4, LN eps 1e-6."""
    from timm.models.vision_transformer import Block

    return nn.ModuleList(
        Block(
            config.qformer_width,
            config.detok_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            device=device,
            dtype=dtype,
        )
        for _ in range(depth)
    )


def mlp_down(config: SEEDConfig, device=None, dtype=None) -> nn.Sequential:
    """``image_down``: bias-free Linear layers W -> 256 -> 128 -> 32 with ReLU between (upstream's widths)."""
    widths = [config.qformer_width, *config.image_down_dims]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b, bias=False, device=device, dtype=dtype))
    return nn.Sequential(*layers)


# ---- the zoo model ------------------------------------------------------------------------------
class SEED(ImageTokenizer):
    """SEED image tokenizer: ``encode(images) -> Tokens`` (ids (B, 32)), ``decode(tokens) -> images``.

    ``decode(tokens, output="embedding")`` gives the (B, G) generation embedding; images need a pixel
    decoder: the tiny UNet a config with ``pixel_decoder="unet"`` carries, or SD-2.1 unCLIP attached
    with ``attach_unclip``.
    """

    arch: ClassVar[str] = "seed"
    config_class: ClassVar[type] = SEEDConfig
    supports_decode: ClassVar[bool] = True
    supports_training: ClassVar[bool] = True

    def __init__(self, config: SEEDConfig, *, device=None, dtype=None):
        super().__init__(config)
        dd = {"device": device, "dtype": dtype}
        w, q = config.qformer_width, config.num_query_tokens
        self.visual_encoder = eva_vit(config, **dd)
        self.ln_vision = nn.LayerNorm(config.vit_width, **dd)  # default eps 1e-5, run in float32
        self.query_tokens = nn.Parameter(torch.randn(1, q, w, **dd) * 0.02)
        self.qformer = CausalQFormer(config, **dd)
        self.encode_task_layer = nn.Sequential(
            nn.Linear(w, w, **dd), nn.Tanh(), nn.Linear(w, config.codebook_dim, **dd)
        )
        self.quantize = VectorQuantizer(config.codebook_size, config.codebook_dim, learnable=True)
        self.decode_task_layer = nn.Sequential(
            nn.Linear(config.codebook_dim, config.codebook_dim, **dd),
            nn.Tanh(),
            nn.Linear(config.codebook_dim, w, **dd),
        )
        # Training only: reconstruct the causal embeddings from the codes (upstream's recon_s).
        self.pos_embed = nn.Parameter(torch.zeros(1, q, w, **dd))
        self.blocks = vit_blocks(config, config.detok_depth, **dd)
        # The de-tokenizer to the generation embedding.
        self.pos_embed_image = nn.Parameter(torch.zeros(1, q, w, **dd))
        self.blocks_image = vit_blocks(config, config.detok_depth, **dd)
        self.image_down = mlp_down(config, **dd)
        self.distill_image_proj = nn.Linear(q * config.image_down_dims[-1], config.generation_dim, **dd)
        self.pixel_decoder = None
        if config.pixel_decoder == "unet":
            from vision.seed.pixels import TinyPixelDecoder

            self.pixel_decoder = TinyPixelDecoder(config, **dd)
        self.quantize.to(**dd)
        # Frozen, as in upstream's tokenizer stage: only stage I trains them (train_tiny unfreezes them there).
        for frozen in (self.visual_encoder, self.ln_vision, self.qformer):
            frozen.requires_grad_(False)
        self.query_tokens.requires_grad_(False)
        self._unclip = None  # an attached diffusers StableUnCLIPImg2ImgPipeline (not part of the weights)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    # ---- preprocessing ---------------------------------------------------------------------------
    def preprocess(self, raw: Any) -> Tensor:
        """Paths, PIL images or uint8 arrays (one or a sequence) -> (B, 3, S, S), CLIP-normalised.

        As upstream's ``ImageTokenizer.processor``: RGB (grayscale repeated, alpha dropped, see
        ``vision.base.read_image``), squash to S x S with PIL bicubic (no crop; Pillow 13's pass order
        on any Pillow, see ``pil_squash``), /255, CLIP mean/std.
        A tensor passes through unchanged: it must already be such a batch.
        """
        if isinstance(raw, Tensor):
            return raw
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not items:
            raise InputError("no images given")
        return torch.stack([squash_normalize(item, self.config.image_size) for item in items])

    def check_images(self, images: Tensor) -> Tensor:
        check_float_tensor(images, "images", dims=4)
        b, c, h, w = images.shape
        s = self.config.image_size
        if c != 3:
            raise InputError(
                f"images must have 3 channels (B, 3, {s}, {s}), got {c} (shape {tuple(images.shape)}); "
                "grayscale or RGBA pictures go through preprocess(), which converts them to RGB"
            )
        if (h, w) != (s, s):
            raise InputError(f"images must be {s}x{s} (this model's input size), got {h}x{w}; use preprocess()")
        lo, hi = float(images.min()), float(images.max())
        bounds = clip_normalized_range()
        if lo < bounds[0] - 1e-3 or hi > bounds[1] + 1e-3:
            raise InputError(
                f"images must be CLIP-normalised pixels (values in [{bounds[0]:.3f}, {bounds[1]:.3f}]), got values "
                f"in [{lo:.3g}, {hi:.3g}]; pass PIL images, paths or uint8 arrays, or use preprocess()"
            )
        return images

    # ---- encode ----------------------------------------------------------------------------------
    def autocast(self, device: torch.device):
        """Autocast in ``config.autocast_dtype`` on accelerators; plain float32 on CPU. ln_vision and the VQ
        search run outside it."""
        return accelerator_autocast(device, self.config.autocast_dtype)

    def _input_dtype(self, x: Tensor) -> Tensor:
        """Inputs in the weights' dtype, unless autocast is on (it casts per operation)."""
        return x if torch.is_autocast_enabled(x.device.type) else x.to(self.dtype)

    def image_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, S, S) -> ViT output (B, P+1, E) and ``ln_vision`` of it in float32 (the Q-Former's input)."""
        with self.autocast(images.device):
            vit = self.visual_encoder.forward_features(self._input_dtype(images))
        with torch.autocast(device_type=images.device.type, enabled=False):
            ln = F.layer_norm(
                vit.float(),
                self.ln_vision.normalized_shape,
                self.ln_vision.weight.float(),
                self.ln_vision.bias.float(),
                self.ln_vision.eps,
            )
        return vit, ln

    def causal_embeddings(self, image_embeds: Tensor) -> Tensor:
        """ln_vision output (B, P+1, E) -> causal query embeddings (B, Q, W)."""
        with self.autocast(image_embeds.device):
            queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
            return self.qformer(queries, self._input_dtype(image_embeds))

    def tokenize(self, images: Tensor, intermediates: dict[str, Tensor] | None = None) -> Tensor:
        """(B, 3, S, S) CLIP-normalised -> ids (B, Q) int64. ``intermediates`` (a dict) collects every stage."""
        vit, ln = self.image_features(images)
        causal = self.causal_embeddings(ln)
        with self.autocast(images.device):
            pre_quant = self.encode_task_layer(causal)
        codes, ids = self.quantize.quantize(pre_quant.float())  # VQ search in float32: ids sit on boundaries
        if intermediates is not None:
            intermediates.update(vit_out=vit, ln_vision_out=ln, qformer_query_out=causal, pre_quant=pre_quant)
            intermediates.update(quant=codes, token_ids=ids)
        return ids

    @inference
    def encode(self, images: Any) -> Tokens:
        """Images (tensor batch, PIL, paths, uint8 arrays) -> Tokens with ids (B, 32) in [0, K)."""
        images = self.check_images(self.preprocess(images).to(self.device))
        ids = self.tokenize(images)
        s = self.config.image_size
        return Tokens(ids=ids, meta={"image_size": [s, s], "codebook_size": self.config.codebook_size})

    # ---- de-tokenize -----------------------------------------------------------------------------
    def generation_embedding(self, ids: Tensor, intermediates: dict[str, Tensor] | None = None) -> Tensor:
        """ids (B, Q) -> the (B, G) generation embedding (upstream ``get_codebook_entry``), float32."""
        check_ids(ids, self.config.codebook_size)
        codes = self.quantize.ids_to_codes(ids.to(self.quantize.embed.device))  # (B, Q, D)
        return self.embedding_from_codes(codes, intermediates)

    def embedding_from_codes(self, codes: Tensor, intermediates: dict[str, Tensor] | None = None) -> Tensor:
        with self.autocast(codes.device):
            up = self.decode_task_layer(codes)  # (B, Q, W)
            x = up + self.pos_embed_image
            for block in self.blocks_image:
                x = block(x)
            down = self.image_down(x)  # (B, Q, 32)
            embedding = self.distill_image_proj(down.flatten(1))  # (B, Q * 32) -> (B, G), query-major
        if intermediates is not None:
            intermediates.update(codebook_vectors=codes, detok_query_up=up, detok_blocks_out=x, detok_image_down=down)
        return embedding.float()

    def reconstruct_causal(self, codes: Tensor) -> Tensor:
        """Codes (B, Q, D) -> the causal embeddings (B, Q, W) rebuilt by ``pos_embed`` + ``blocks`` (training only)."""
        x = self.decode_task_layer(codes) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x

    def check_tokens(self, tokens: Tokens) -> Tensor:
        """-> ids (B, Q) after checking count, mask and range."""
        if not isinstance(tokens, Tokens):
            raise InputError(f"decode takes zoo.Tokens, got {type(tokens).__name__}")
        if tokens.ids is None:
            raise InputError("SEED decodes discrete ids; these Tokens hold embeddings only")
        q = self.config.num_query_tokens
        if tokens.ids.shape[1] != q:
            raise InputError(
                f"SEED decodes exactly {q} tokens per image (its causal queries), got {tokens.ids.shape[1]}"
            )
        if not bool(tokens.mask.all()):
            raise InputError(f"SEED needs all {q} tokens of every image; the mask leaves some out")
        return check_ids(tokens.ids, self.config.codebook_size)

    @inference
    def decode(
        self,
        tokens: Tokens,
        output: str = "images",
        seed: int | Tensor = 0,
        steps: int | None = None,
        guidance: float | None = None,
        noise_level: int | None = None,
    ) -> Tensor:
        """Tokens (ids (B, 32)) -> images (B, 3, H, W) in [-1, 1], or with ``output="embedding"`` the
        (B, G) generation embedding.

        Images come from the attached unCLIP pipeline if there is one, else from the tiny pixel
        decoder the config carries. ``steps``, ``guidance`` and ``noise_level`` default to the
        config's (upstream: 20, 10, 0). Image i's noise is drawn from ``seed`` (an int, or one per
        image) and its own ids, so it decodes the same in any batch.
        """
        ids = self.check_tokens(tokens)
        if output not in ("images", "embedding"):
            raise InputError(f"output must be 'images' or 'embedding', got {output!r}")
        embedding = self.generation_embedding(ids.to(self.device))
        if output == "embedding":
            return embedding
        steps = self.config.decode_steps if steps is None else int(steps)
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        guidance = self.config.guidance if guidance is None else float(guidance)
        noise_level = self.config.noise_level if noise_level is None else int(noise_level)
        generators = self.image_generators(ids, seed)
        if self._unclip is not None:
            return self._unclip.generate(embedding, generators, steps, guidance, noise_level)
        if self.pixel_decoder is not None:
            return self.pixel_decoder.sample(embedding, generators, steps, guidance)
        raise NotSupportedError(
            "this SEED model carries no pixel decoder: decode(tokens, output='embedding') gives the generation "
            "embedding; for images attach SD-2.1 unCLIP with model.attach_unclip(pipeline) (see vision.seed.pixels)"
        )

    def image_generators(self, ids: Tensor, seed: int | Tensor) -> list[torch.Generator]:
        """One CPU generator per image, seeded from ``seed`` and that image's ids."""
        b = ids.shape[0]
        seeds = torch.as_tensor(seed, dtype=torch.int64).reshape(-1)
        if seeds.numel() not in (1, b):
            raise InputError(f"seed must be one int or one per image ({b}), got {seeds.numel()}")

        return [content_generator(int(seeds[i if seeds.numel() == b else 0]), ids[i]) for i in range(b)]

    def attach_unclip(self, pipeline: Any) -> SEED:
        """Decode to pixels through a diffusers ``StableUnCLIPImg2ImgPipeline`` (SD-2.1 unCLIP, whose
        1024-d image embedding the generation embedding imitates). Returns self."""
        from vision.seed.pixels import UnCLIPDecoder

        decoder = UnCLIPDecoder(pipeline)
        if decoder.embedding_dim != self.config.generation_dim:
            raise ConfigError(
                f"the unCLIP pipeline takes {decoder.embedding_dim}-d image embeddings, this SEED makes "
                f"{self.config.generation_dim}-d ones"
            )
        self._unclip = decoder
        return self

    # ---- hooks for the tools ---------------------------------------------------------------------
    def load_item(self, path: Path) -> Any:
        """One image file -> the PIL RGB image (an unreadable file is an InputError naming it)."""

        return read_image(path)

    def sample_inputs(self) -> list[str]:
        """The bundled demo images (paths)."""
        return [str(p) for p in sorted(SAMPLES.glob("*.png"))]

    def input_units(self, item: Any) -> tuple[float, str]:
        """Pixels at the model's input size (what the 32 tokens describe)."""
        return float(self.config.image_size**2), "pixel"

    def reconstruct(self, batch: Tensor, tokens: Tokens) -> list:
        """Tokens -> PIL images through the pixel decoder (seed 0, the config's sampler)."""
        return self.postprocess(self.decode(tokens))

    def reconstruction_quality(self, items: list, reconstructions: list) -> dict[str, Any]:
        """Cosine similarity of the generation embeddings of each input and of its reconstruction, re-encoded.

        SEED's tokens are semantic, not pixel-faithful: the score says whether the picture drawn from
        the tokens carries what the tokens said (SEED's papers use CLIP similarity in the same spirit).
        """
        return {
            "name": "reconstruction embedding cosine",
            "value": float(self.embedding_similarity(items, reconstructions).mean()),
            "protocol": "cosine between the generation embeddings of encode(x) and of encode(decode(encode(x))), "
            "mean over images, decode with seed 0 and the config's sampler",
        }

    @inference
    def embedding_similarity(self, items: list, reconstructions: list) -> Tensor:
        """(B,) cosine between the generation embeddings of ``items`` and of ``reconstructions`` (raw images)."""
        a = self.generation_embedding(self.encode(items).ids)
        b = self.generation_embedding(self.encode(reconstructions).ids)
        return F.cosine_similarity(a, b, dim=-1)

    # ---- training --------------------------------------------------------------------------------
    def training_batch(self, items: list) -> Tensor:
        return self.preprocess(items)

    def training_loss(self, batch: Any) -> Tensor:
        """``tokenizer_loss`` (+ the pixel decoder's diffusion loss on the detached generation embedding,
        when the model carries one).

        ``batch``: CLIP-normalised images (B, 3, S, S) or a dict with "images" (+ "image_embeds" (B, G)).
        """
        images, targets = (batch["images"], batch.get("image_embeds")) if isinstance(batch, dict) else (batch, None)
        images = self.check_images(images.to(self.device))
        loss, embedding = self.tokenizer_loss(images, targets)
        if self.pixel_decoder is not None:
            loss = loss + self.pixel_decoder.diffusion_loss(self.pixel_targets(images), embedding.detach())
        return loss

    def tokenizer_loss(self, images: Tensor, image_embeds: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """SEED's stage-II loss and the generation embedding it made: 5 x VQ (upstream's legacy form, beta
        0.25) + 2 x (1 - cosine) between the causal embeddings and their reconstruction from the codes
        (``pos_embed`` + ``blocks``) + 0.5 x MSE of the generation embedding to ``image_embeds`` (B, G),
        when given. As upstream, the ViT and the Q-Former stay frozen.
        """
        with torch.no_grad():
            _, ln = self.image_features(images)
            causal = self.causal_embeddings(ln).float()
        with self.autocast(images.device):
            pre_quant = self.encode_task_layer(causal).float()
        codes, ids = self.quantize.quantize(pre_quant)
        loss = 5 * self.quantize.loss(pre_quant, ids, beta=0.25, legacy=True)
        with self.autocast(images.device):
            rebuilt = self.reconstruct_causal(codes)
        loss = loss + 2 * (1 - F.cosine_similarity(rebuilt.float(), causal, dim=-1)).mean()
        embedding = self.embedding_from_codes(codes)
        if image_embeds is not None:
            loss = loss + 0.5 * F.mse_loss(embedding, image_embeds.to(embedding))
        return loss, embedding

    def pixel_targets(self, images: Tensor) -> Tensor:
        """CLIP-normalised (B, 3, S, S) -> what the tiny pixel decoder draws: (B, 3, s, s) in [-1, 1]."""
        return F.interpolate(denormalize(images), size=self.config.pixel_size, mode="area") * 2 - 1

    def train(self, mode: bool = True) -> SEED:
        """Train mode never reaches the frozen ViT (upstream freezes it and disables its train())."""
        super().train(mode)
        self.visual_encoder.eval()
        return self


def squash_normalize(item: Any, size: int) -> Tensor:
    """One raw image -> (3, size, size): RGB, PIL bicubic squash (no crop), /255, CLIP mean/std."""
    import torchvision.transforms.functional as TF

    image = pil_squash(read_image(item), size, size)
    return TF.normalize(TF.to_tensor(image), CLIP_MEAN, CLIP_STD)


def vertical_pass_first(width: int, height: int, new_width: int, new_height: int) -> bool:
    """Whether Pillow >= 13 resizes vertically first: when the height shrinks by more than twice the
    pixels the width does (python-pillow/Pillow#9549). Pillow <= 12 always runs the horizontal pass first."""
    shrink_h, shrink_w = height - new_height, width - new_width
    return shrink_h > 0 and shrink_h > 2 * shrink_w


def pil_squash(image, new_width: int, new_height: int):
    """PIL bicubic resize to ``new_width`` x ``new_height`` (no crop), the same on every Pillow version.

    Pillow resizes in two separable passes and rounds the intermediate image to 8 bits, so the pass
    order shows in the result (up to ~0.1 after CLIP normalisation; 1 of the fixture's 64 ids moves).
    Pillow 13 (which made the parity fixture, and upstream's users get today) picks the order by
    ``vertical_pass_first``; Pillow 12 (which gradio pins) always goes horizontally first. Running each
    pass as its own one-axis resize, in Pillow 13's order, gives Pillow 13's pixels on both: a
    one-axis resize is exactly that one pass.
    """
    from PIL import Image

    width, height = image.size
    if (width, height) == (new_width, new_height):
        return image.copy()  # what Pillow's resize returns for an unchanged size
    if vertical_pass_first(width, height, new_width, new_height):
        steps = [(width, new_height), (new_width, new_height)]
    else:
        steps = [(new_width, height), (new_width, new_height)]
    for step in steps:
        if step != image.size:
            image = image.resize(step, Image.Resampling.BICUBIC)
    return image


def clip_normalized_range() -> tuple[float, float]:
    """The lowest and highest value a CLIP-normalised pixel can take."""
    low = min((0 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD))
    high = max((1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD))
    return low, high


def denormalize(images: Tensor) -> Tensor:
    """CLIP-normalised (B, 3, H, W) -> pixels in [0, 1]."""
    mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype)[:, None, None]
    std = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype)[:, None, None]
    return (images * std + mean).clamp(0, 1)

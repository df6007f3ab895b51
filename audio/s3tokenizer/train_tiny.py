"""Train the tiny S3-style supervised speech tokenizer on espeak-ng speech (hub_cards/s3tokenizer-tiny).

Recipe (CosyVoice's S3 idea at toy scale): an S3Tokenizer v2 encoder (128 wide, 2 heads, 3 blocks)
and FSQ 3^8 at 25 tokens/s, trained end to end with a CTC loss from a small head that sees only the
quantised codes, so the ids must carry the words. Speech is synthesised with espeak-ng (several
voices, rates and pitches) from random sentences over a fixed word list; held-out sentences are
never trained on. Needs espeak-ng on PATH; the tests and the demo only need the committed outputs.

    flock /tmp/tokenzoo-cpu.lock python -m audio.s3tokenizer.train_tiny   # the bundled model: 3.4 min, 1628 steps here

The budget is wall-clock time, so a faster or busier machine takes more or fewer steps (the card records
how many).

Writes hub_cards/s3tokenizer-tiny/ (README.md, config.json, model.safetensors, ctc_head.safetensors)
and audio/samples/ (three held-out clips as 16 kHz PCM16 WAV + transcripts.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from audio.features import log_mel_spectrogram
from audio.io import pad_batch, resample
from audio.s3tokenizer.model import S3Tokenizer, S3TokenizerConfig
from audio.s3tokenizer.tiny import (
    HEAD_FILE,
    CTCHead,
    bits_per_second,
    character_error_rate,
    codebook_stats,
    normalise_text,
    text_to_ids,
    transcribe,
)
from zoo.schedule import warmup_cosine

logger = logging.getLogger("train_tiny")
ROOT = Path(__file__).resolve().parents[2]

WORDS = """the a of to and in is it you that he was for on are with as his they be at one have this from or had by hot
word but what some we can out other were all there when up use your how said an each she which do their time
if will way about many then them write would like so these her long make thing see him two has look more day
could go come did number sound no most people my over know water than call first who may down side been now
find any new work part take get place made live where after back little only round man year came show every
good me give our under name very through just form sentence great think say help low line differ turn cause
much mean before move right boy old too same tell does set three want air well also play small end put home
read hand port large spell add even land here must big high such follow act why ask men change went light kind
off need house picture try us again animal point mother world near build self earth father head stand own page
should country found answer school grow study still learn plant cover food sun four between state keep eye
never last let thought city tree cross farm hard start might story saw far sea draw left late run while press
close night real life few north open seem together next white children begin got walk example ease paper group
always music those both mark often letter until mile river car feet care second book carry took science eat
room friend began idea fish mountain stop once base hear horse cut sure watch color face wood main enough
plain girl usual young ready above ever red list though feel talk bird soon body dog family direct pose leave
song measure door product black short numeral class wind question happen complete ship area half rock order
fire south problem piece told knew pass since top whole king space heard best hour better true during hundred
five remember step early hold west ground interest reach fast verb sing listen six table travel less morning
ten simple several vowel toward war lay against pattern slow center love person money serve appear road map
rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark machine note wait
plan figure star box noun field rest correct able pound done beauty drive stood contain front teach week final
gave green oh quick develop ocean warm free minute strong special mind behind clear tail produce fact street
inch multiply nothing course stay wheel full force blue object decide surface deep moon island foot system
busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran check game shape
equate miss brought heat snow tire bring yes distant fill east paint language among""".split()
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+f3", "en-gb+f2", "en-us+m3", "en-us-nyc"]


def synthesise(text: str, voice: str, rate: int, pitch: int) -> torch.Tensor:
    """espeak-ng -> (N,) float32 at 16 kHz (espeak writes 22.05 kHz PCM16)."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-a", "100", "-w", tmp.name, text],
            check=True,
            capture_output=True,
        )
        data, rate_hz = sf.read(tmp.name, dtype="float32")
    return resample(torch.from_numpy(data), rate_hz)


def random_utterance(rng: random.Random) -> dict:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
    return {"text": text, "voice": rng.choice(VOICES), "rate": rng.randint(130, 190), "pitch": rng.randint(25, 75)}


def build_corpus(count: int, rng: random.Random, exclude: set[str]) -> list[dict]:
    items = []
    while len(items) < count:
        item = random_utterance(rng)
        if item["text"] not in exclude:
            exclude.add(item["text"])
            items.append(item)
    return items


def featurise(items: list[dict]) -> list[dict]:
    for item in items:
        wave = synthesise(item["text"], item["voice"], item["rate"], item["pitch"])
        item["wave"] = wave
        mel, _ = log_mel_spectrogram(wave[None])
        item["mel"] = mel[0]
    return items


def batches(items: list[dict], size: int, rng: random.Random):
    order = sorted(range(len(items)), key=lambda i: items[i]["mel"].shape[-1] + rng.random() * 40)
    groups = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(groups)
    return groups


def tiny_card(weights: str, metrics: list[dict]):
    """The s3tokenizer-tiny card from how the weights were made and what was measured."""
    from zoo.cards import make_card

    cer = next(m["value"] for m in metrics if m["type"] == "cer")
    return make_card(
        name="s3tokenizer-tiny",
        arch="s3tokenizer",
        modality="audio",
        license="apache-2.0",
        summary="A toy S3-style supervised speech tokenizer (S3Tokenizer v2 layout: rotary + FSMN encoder, "
        "FSQ 3^8 = 6561 ids at 25 tokens/s) trained here on synthetic English speech. It shows the "
        "recipe working offline; it is not a replacement for the released tokenizers.",
        tokens="FSQ id in [0, 6561), 25 per second of 16 kHz speech",
        upstream_repo="xingchensong/S3Tokenizer",
        weights=weights,
        metrics=metrics,
        body="The ids carry the words: a 2-layer convolutional CTC head reading only the quantised codes "
        f"transcribes held-out sentences at {100 * cer:.1f}% character error rate.\n\n"
        "`decode` raises NotSupportedError: S3 tokens are turned back into speech by TouchTTS (or CosyVoice's "
        "flow decoder), not by the tokenizer. touchtts-tiny was trained on this tokenizer's ids and is its "
        'decoder: `zoo.load("touchtts-tiny").decode(tokens)` -> (waveforms at 22.05 kHz, lengths). It refuses '
        "ids of another S3 variant (tokens name their tokenizer in `meta['speech_tokenizer']`).\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "hub_cards" / "s3tokenizer-tiny")
    parser.add_argument("--samples", type=Path, default=ROOT / "audio" / "samples")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--heldout", type=int, default=120)
    parser.add_argument("--minutes", type=float, default=3.4, help="wall-clock budget for the optimisation")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--z-penalty", type=float, default=0.1, help="weight of mean(z^2) on FSQ's input")
    parser.add_argument(
        "--quantizer-warmup",
        type=float,
        default=0.3,
        help="fraction of the budget during which the CTC head sees unrounded FSQ values (rounding starts after)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    seen: set[str] = set()
    started = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny per-clip ops: one thread avoids spin-waiting on a busy machine
    heldout = featurise(build_corpus(args.heldout, rng, seen))
    train = featurise(build_corpus(args.train, rng, seen))
    torch.set_num_threads(threads)
    train_seconds = sum(len(i["wave"]) for i in train) / 16000
    logger.info(
        "synthesised %d train (%.0f s) + %d held-out clips in %.0f s",
        len(train),
        train_seconds,
        len(heldout),
        time.time() - started,
    )

    config = S3TokenizerConfig(variant="v2", n_audio_state=128, n_audio_head=2, n_audio_layer=3)
    model, head = S3Tokenizer(config), CTCHead()
    params = [*model.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    budget, warmup, step, epoch = args.minutes * 60, 150, 0, 0
    opt_start = time.time()
    model.train()
    head.train()
    while time.time() - opt_start < budget:
        epoch += 1
        for group in batches(train, args.batch, rng):
            elapsed = time.time() - opt_start
            if elapsed >= budget:
                break
            progress = elapsed / budget
            lr = 2e-3 * warmup_cosine(step, warmup, progress)
            for g in optimiser.param_groups:
                g["lr"] = lr
            mel, mel_len = pad_batch([train[i]["mel"] for i in group])
            hidden, lengths = model.encoder(mel, mel_len)
            if progress < args.quantizer_warmup:  # head reads the bounded values unrounded: a gradient from step 1
                fsq = model.quantizer._codebook.fsq
                codes = fsq.bound(model.quantizer._codebook.project_down(hidden)) / fsq._half_width()
            else:
                codes, _ = model.quantizer._codebook.codes_and_ids(hidden)
            log_probs = head(codes).log_softmax(-1).transpose(0, 1)  # (2S, B, V)
            targets = [torch.tensor(text_to_ids(train[i]["text"])) for i in group]
            loss = F.ctc_loss(
                log_probs,
                torch.cat(targets),
                lengths * head.upsample,
                torch.tensor([len(t) for t in targets]),
                blank=0,
                zero_infinity=True,
            )
            # S3's encoder has no final LayerNorm, so nothing stops project_down's output from growing until
            # tanh saturates and FSQ passes no gradient (seen within 25 steps). A small penalty keeps it in range.
            z = model.quantizer._codebook.project_down(hidden)
            loss_total = loss + args.z_penalty * z.pow(2).mean()
            optimiser.zero_grad()
            loss_total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            step += 1
            if step % 50 == 0:
                logger.info("epoch %d step %d loss %.3f lr %.2e", epoch, step, loss.item(), lr)
    train_minutes = (time.time() - opt_start) / 60
    model.eval()
    head.eval()

    waves, lengths = pad_batch([i["wave"] for i in heldout])
    tokens = model.encode(waves, lengths=lengths)
    hypotheses = transcribe(model, head, tokens)
    references = [i["text"] for i in heldout]
    cer = character_error_rate(hypotheses, references)
    usage = codebook_stats(tokens, model.codebook_size)
    logger.info("held-out CER %.3f, usage %.3f, perplexity %.1f", cer, usage["usage"], usage["perplexity"])
    for h, r in list(zip(hypotheses, references))[:5]:
        logger.info("  ref %r\n  hyp %r", normalise_text(r), h)

    protocol = f"{len(heldout)} held-out espeak-ng sentences (unseen word sequences; voices {', '.join(VOICES)})"
    metrics = [
        {
            "name": "held-out CER (greedy CTC from ids)",
            "value": round(cer, 4),
            "type": "cer",
            "dataset": "espeak-ng synthetic speech",
            "protocol": protocol,
        },
        {
            "name": "codebook usage",
            "value": round(usage["usage"], 4),
            "type": "codebook_usage",
            "dataset": "espeak-ng synthetic speech",
            "protocol": protocol + "; distinct ids / 6561",
        },
        {
            "name": "code perplexity",
            "value": round(usage["perplexity"], 1),
            "type": "perplexity",
            "dataset": "espeak-ng synthetic speech",
            "protocol": protocol,
        },
        {
            "name": "bits per second",
            "value": round(bits_per_second(25, 6561), 1),
            "type": "bits_per_second",
            "dataset": "any",
            "protocol": "25 tokens/s x log2(6561)",
        },
    ]
    weights = (
        f"Trained here by `python -m audio.s3tokenizer.train_tiny` (seed {args.seed}): {len(train)} espeak-ng clips "
        f"({train_seconds / 60:.1f} min of speech; random 3-9 word sentences over a {len(WORDS)}-word list; "
        f"voices {', '.join(VOICES)}; rate 130-190 wpm; pitch 25-75), {step} AdamW steps of batch {args.batch} "
        f"({train_minutes:.1f} min on 2 shared CPU cores), CTC loss on characters from a small head over the FSQ codes "
        f"(unrounded for the first {100 * args.quantizer_warmup:.0f}% of the time, rounded after) plus "
        f"{args.z_penalty} x mean(z^2) on FSQ's input so tanh does not saturate. "
        f"The CTC head is {HEAD_FILE} (not part of the tokenizer)."
    )
    card = tiny_card(weights, metrics)
    model.save_pretrained(args.out, card=card)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(args.out / HEAD_FILE))
    (args.out / HEAD_FILE).chmod(0o644)  # safetensors writes 0600

    args.samples.mkdir(parents=True, exist_ok=True)
    picks = sorted(range(len(heldout)), key=lambda i: -len(heldout[i]["text"]))[:3]
    records = []
    for n, i in enumerate(picks):
        item = heldout[i]
        name = f"heldout{n}.wav"
        pcm = np.clip(np.round(item["wave"].numpy() * 32767), -32768, 32767).astype(np.int16)
        sf.write(str(args.samples / name), pcm, 16000, subtype="PCM_16")
        records.append({"file": name, **{k: item[k] for k in ("text", "voice", "rate", "pitch")}})
    (args.samples / "transcripts.json").write_text(json.dumps(records, indent=2) + "\n")
    logger.info("wrote %s and %s", args.out, args.samples)


if __name__ == "__main__":
    main()

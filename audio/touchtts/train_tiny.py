"""Train touchtts-tiny's LM and flow on the espeak-ng corpus (hub_cards/touchtts-tiny: config.json + model.safetensors).

    python -m audio.touchtts.data espeak /work/data/touchtts-espeak        # the corpus, once (~5 CPU-minutes)
    python -m audio.touchtts.train_tiny lm   --corpus /work/data/touchtts-espeak --work /work/data/touchtts-tiny
    python -m audio.touchtts.train_tiny flow --corpus /work/data/touchtts-espeak --work /work/data/touchtts-tiny
    python -m audio.touchtts.train_tiny finish --corpus /work/data/touchtts-espeak --work /work/data/touchtts-tiny

``lm`` and ``flow`` are independent (upstream trains them apart too) and may run side by side; each
writes a resumable checkpoint (weights, AdamW moments, step) to WORK every ``--save-every`` seconds,
and a rerun continues from it. Batches are drawn from a generator seeded by (seed, part, step), so a
resumed run sees the batches an uninterrupted one would. ``finish`` assembles LM + flow + speaker
table + the tiny HiFi-GAN vocoder (hub_cards/touchtts-tiny/vocoder.*, audio.touchtts.train_vocoder),
writes config.json, model.safetensors, training.json and the card, and measures on held-out sentences
(never trained on):

* intelligibility: the tiny S3-CTC recogniser's character error rate on TouchTTS speech of the text
  against the same on the espeak-ng originals (and on TouchTTS's flow + vocoder fed the originals'
  own S3 tokens, the decoder S3Tokenizer lacks);
* mel distance: mean |log-mel difference| to the original's mel, frame-aligned for decoded tokens
  (same token count, same frames) and after dynamic time warping for text-to-speech (its own durations).

Recipe: tiny_config's trunks (Qwen2 shape, 64 wide, 2 layers) over s3tokenizer-tiny's 6561 codes;
char-level text; one learned 192-d speaker vector per espeak-ng voice (the flow's speaker condition);
the flow trained with dynamic chunk masks (WeNet's: random chunk sizes, full context half the time) so
the same weights sample whole utterances and stream chunk by chunk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audio.touchtts.mel import DEFAULT_MEL, mel_spectrogram
from audio.touchtts.model import TouchTTS, TouchTTSConfig, tiny_config
from zoo.api import Tokens
from zoo.errors import InputError

logger = logging.getLogger("train_tiny")
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "hub_cards" / "touchtts-tiny"
PARTS = ("lm", "flow")
DEFAULT_VOICE = "en-us"


def tiny_tts_config(vocoder: dict | None) -> TouchTTSConfig:
    """touchtts-tiny's configuration: tiny trunks, the corpus's voices as speakers, a dynamic-chunk flow."""
    from audio.s3tokenizer.train_tiny import VOICES

    base = tiny_config(
        6561,
        speakers=tuple(VOICES),
        default_speaker=DEFAULT_VOICE,
        vocoder=vocoder,
        speech_tokenizer="s3tokenizer-tiny",
    )
    flow = dataclasses.replace(base.flow, use_dynamic_chunk=True)
    return dataclasses.replace(base, flow=flow)


def vocoder_config(folder: Path) -> dict:
    return json.loads((folder / "vocoder.json").read_text())


# ---- data ---------------------------------------------------------------------------------------
def load_records(corpus: Path, split: str) -> list[dict]:
    from audio.touchtts.data import read_corpus

    records = [r for r in read_corpus(corpus, split) if r["tokens"]]
    if not records:
        raise InputError(f"{corpus} has no {split} utterances with speech tokens")
    return records


def mel_cache(corpus: Path, records: list[dict], work: Path) -> list[Tensor]:
    """(M, T) log-mel of every record's 22.05 kHz audio, computed once and kept in WORK/mels-<split>.safetensors."""
    from safetensors.torch import load_file, save_file

    from audio.io import load_audio

    path = work / f"mels-{records[0]['split']}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        if all(r["id"] in stored for r in records):
            return [stored[r["id"]] for r in records]
    mels = {}
    for record in records:
        mel, _ = mel_spectrogram(load_audio(corpus / record["file"], DEFAULT_MEL.sample_rate))
        mels[record["id"]] = mel[0].contiguous()
    save_file(mels, str(path))
    return [mels[r["id"]] for r in records]


def flow_target(mel: Tensor, n_codes: int, config: TouchTTSConfig) -> Tensor:
    """An utterance's (M, T) mel cut or padded (with the mel of silence) to the frames its codes map to."""
    frames = config.flow.mel_frames(n_codes)
    if mel.shape[1] >= frames:
        return mel[:, :frames]
    silence = torch.full((mel.shape[0], frames - mel.shape[1]), float(np.log(DEFAULT_MEL.log_floor)))
    return torch.cat([mel, silence], dim=1)


def draw_batch(records: list[dict], size: int, seed: int, part: str, step: int) -> list[int]:
    rng = random.Random(f"touchtts-tiny:{seed}:{part}:{step}")
    return [rng.randrange(len(records)) for _ in range(size)]


def codes_of(records: list[dict]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(r["tokens"]) for r in records])
    codes = torch.zeros(len(records), int(lengths.max()), dtype=torch.int64)
    for row, record in enumerate(records):
        codes[row, : lengths[row]] = torch.tensor(record["tokens"])
    return codes, lengths


def lm_batch(model: TouchTTS, records: list[dict]) -> dict:
    codes, lengths = codes_of(records)
    return {"lm": model.lm_batch([r["text"] for r in records], codes, lengths)}


def flow_batch(model: TouchTTS, records: list[dict], mels: list[Tensor]) -> dict:
    from audio.s3tokenizer.train_tiny import VOICES

    codes, lengths = codes_of(records)
    targets = [flow_target(mel, len(r["tokens"]), model.config) for r, mel in zip(records, mels)]
    frames = torch.tensor([t.shape[1] for t in targets])
    mel = torch.zeros(len(records), DEFAULT_MEL.n_mels, int(frames.max()))
    for row, target in enumerate(targets):
        mel[row, :, : target.shape[1]] = target
    speakers = torch.tensor([VOICES.index(r["voice"]) for r in records])
    return {
        "flow": {"mel": mel, "mel_lengths": frames, "codes": codes, "code_lengths": lengths, "speaker_ids": speakers}
    }


# ---- resumable checkpoints (safetensors: weights, AdamW moments, step) ------------------------------
def part_parameters(model: TouchTTS, part: str) -> dict[str, torch.nn.Parameter]:
    if part == "lm":
        return {f"lm.{k}": v for k, v in model.lm.named_parameters()}
    params = {f"flow.{k}": v for k, v in model.flow.named_parameters()}
    params["speaker_table"] = model.speaker_table
    return params


def save_checkpoint(path: Path, params: dict, optimiser: torch.optim.Optimizer, step: int, extra: dict) -> None:
    from safetensors.torch import save_file

    from zoo.files import atomic_write

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in params.items()}
    for name, param in params.items():
        state = optimiser.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"adam.{key}.{name}"] = state[key].contiguous()
    metadata = {"step": str(step), "extra": json.dumps(extra)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_checkpoint(path: Path, params: dict, optimiser: torch.optim.Optimizer | None) -> tuple[int, dict]:
    """Fill ``params`` (and the optimiser's moments) from ``path``; returns (step, extra)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    step = int(metadata["step"])
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[f"model.{name}"])
            if optimiser is not None and f"adam.exp_avg.{name}" in tensors:
                optimiser.state[param] = {
                    "step": torch.tensor(float(step)),
                    "exp_avg": tensors[f"adam.exp_avg.{name}"].clone(),
                    "exp_avg_sq": tensors[f"adam.exp_avg_sq.{name}"].clone(),
                }
    return step, json.loads(metadata.get("extra", "{}"))


# ---- training -------------------------------------------------------------------------------------
def train(args, part: str) -> None:
    from zoo.schedule import warmup_cosine

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    model = TouchTTS(tiny_tts_config(None)).train()
    params = part_parameters(model, part)
    optimiser = torch.optim.AdamW(params.values(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    path = args.work / f"{part}.safetensors"
    step, record = 0, {"curve": [], "seconds": 0.0, "cpu_seconds": 0.0}
    if path.is_file():
        step, record = load_checkpoint(path, params, optimiser)
        logger.info("%s: resuming at step %d from %s", part, step, path)
    records = load_records(args.corpus, "train")
    mels = mel_cache(args.corpus, records, args.work) if part == "flow" else None
    steps = args.lm_steps if part == "lm" else args.flow_steps
    started, cpu_started, saved = time.time(), time.process_time(), time.time()
    running = []

    def elapsed() -> dict:
        return {
            "seconds": record["seconds"] + time.time() - started,
            "cpu_seconds": record["cpu_seconds"] + time.process_time() - cpu_started,
        }

    while step < steps:
        for group in optimiser.param_groups:
            group["lr"] = args.lr * warmup_cosine(step, 200, step / steps, floor=0.05)
        rows = draw_batch(records, args.batch, args.seed, part, step)
        chosen = [records[i] for i in rows]
        if part == "lm":
            batch = lm_batch(model, chosen)
        else:
            batch = flow_batch(model, chosen, [mels[i] for i in rows])
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        loss = model.training_loss(batch, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimiser.step()
        running.append(loss.item())
        step += 1
        if step % 50 == 0 or step == steps:
            record["curve"].append({"step": step, "loss": round(sum(running) / len(running), 4)})
            logger.info("%s step %d loss %.4f (%.0f s)", part, step, sum(running) / len(running), elapsed()["seconds"])
            running = []
        if time.time() - saved > args.save_every or step == steps:
            save_checkpoint(path, params, optimiser, step, {**record, **elapsed()})
            saved = time.time()
    logger.info("%s: done, %d steps in %s", part, steps, path)


# ---- assembling and measuring -----------------------------------------------------------------------
def assemble(args) -> tuple[TouchTTS, dict]:
    from audio.touchtts.vocoder import load_vocoder

    model = TouchTTS(tiny_tts_config(vocoder_config(args.out)))
    model.attach_vocoder(load_vocoder(args.out))
    training = {}
    for part in PARTS:
        step, record = load_checkpoint(args.work / f"{part}.safetensors", part_parameters(model, part), None)
        training[part] = {"steps": step, **record}
    return model.eval(), training


def dtw_mel_distance(ours: Tensor, theirs: Tensor) -> float:
    """Mean |difference| per mel bin of (M, T1) and (M, T2) log-mels along their cheapest monotonic alignment."""
    a, b = ours.T.double().numpy(), theirs.T.double().numpy()
    cost = np.abs(a[:, None, :] - b[None, :, :]).mean(-1)  # (T1, T2)
    total = np.full((len(a) + 1, len(b) + 1), np.inf)
    steps = np.zeros_like(total)
    total[0, 0] = 0.0
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            options = (total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
            k = int(np.argmin(options))
            previous = ((i - 1, j - 1), (i - 1, j), (i, j - 1))[k]
            total[i, j] = options[k] + cost[i - 1, j - 1]
            steps[i, j] = steps[previous] + 1
    return float(total[-1, -1] / steps[-1, -1])


def measure(model: TouchTTS, corpus: Path, work: Path, count: int, batch: int) -> dict:
    """Held-out intelligibility and mel distance (see the module docstring)."""
    from audio.io import resample
    from audio.touchtts.data import TinyRecogniser, corpus_cer

    heldout = load_records(corpus, "heldout")[:count]
    originals = mel_cache(corpus, heldout, work)
    recogniser = TinyRecogniser()
    texts = [r["text"] for r in heldout]
    tts_waves, decoded_waves, tts_l1, decoded_l1, durations, started = [], [], [], [], [], time.time()
    for first in range(0, len(heldout), batch):
        group = heldout[first : first + batch]
        voices = [r["voice"] for r in group]
        speaker = torch.stack([model.speaker_vectors(v, 1)[0] for v in voices])
        tokens = model.encode([r["text"] for r in group], seed=0)
        mel, frames = model.decode_mel(tokens, speaker=speaker, seed=0)
        waves, lengths = model.vocode(mel, frames)
        codes, code_lengths = codes_of(group)
        own = Tokens(ids=codes, mask=torch.arange(codes.shape[1])[None] < code_lengths[:, None])
        own_mel, own_frames = model.decode_mel(own, speaker=speaker, seed=0)
        own_waves, own_lengths = model.vocode(own_mel, own_frames)
        for row in range(len(group)):
            original = originals[first + row]
            tts_waves.append(resample(waves[row, : lengths[row]], model.sample_rate, 16000))
            decoded_waves.append(resample(own_waves[row, : own_lengths[row]], model.sample_rate, 16000))
            tts_l1.append(dtw_mel_distance(mel[row, :, : frames[row]], original))
            n = min(int(own_frames[row]), original.shape[1])
            decoded_l1.append(float((own_mel[row, :, :n] - original[:, :n]).abs().mean()))
            durations.append(float(frames[row]) / original.shape[1])
    seconds = time.time() - started
    return {
        "utterances": len(heldout),
        "cer_espeak_originals": round(corpus_cer(texts, [r["asr"] for r in heldout]), 4),
        "cer_touchtts_text_to_speech": round(corpus_cer(texts, recogniser(tts_waves)[1]), 4),
        "cer_touchtts_decode_of_original_tokens": round(corpus_cer(texts, recogniser(decoded_waves)[1]), 4),
        "mel_l1_text_to_speech_dtw": round(float(np.mean(tts_l1)), 4),
        "mel_l1_decode_of_original_tokens": round(float(np.mean(decoded_l1)), 4),
        "duration_ratio_text_to_speech": round(float(np.mean(durations)), 3),
        "seconds": round(seconds, 1),
    }


USAGE = """import zoo

model = zoo.load(NAME)
wave = model.synthesize("large help once week")  # (S,) float32 at model.sample_rate (22.05 kHz)
waves = model.synthesize(["map serve plan", "figure every week"], speaker="en-gb")  # (B, S), zero-padded
tokens = model.encode("large help")  # text -> S3 speech tokens (s3tokenizer-tiny's ids)
waves, lengths = model.decode(tokens)  # S3 tokens -> speech: TouchTTS is the decoder S3Tokenizer lacks
pieces = list(model.synthesize("streamed chunk by chunk", stream=True))  # 1-D pieces as the LM writes
print(wave.shape, waves.shape, lengths, len(pieces))"""


def card(model: TouchTTS, figures: dict, training: dict, corpus: dict, note: str = ""):
    from zoo.cards import make_card

    protocol = (
        f"{figures['utterances']} held-out espeak-ng sentences (unseen word sequences, the corpus's voices; "
        "seed 0): tiny S3-CTC recogniser (hub_cards/s3tokenizer-tiny) on 16 kHz resamples, corpus CER against "
        "the known text"
    )
    aligned = "mean |log-mel difference| per bin over the frames both have (same tokens, same frames)"
    warped = "mean |log-mel difference| per bin and frame along the cheapest monotonic alignment"

    def metric(name: str, kind: str, key: str, how: str) -> dict:
        dataset = "espeak-ng synthetic speech"
        return {
            "name": name,
            "type": kind,
            "value": figures[key],
            "dataset": dataset,
            "protocol": how,
            "task": "text-to-speech",
        }

    metrics = [
        metric("held-out CER, TouchTTS text to speech", "cer", "cer_touchtts_text_to_speech", protocol),
        metric("held-out CER, espeak-ng originals", "cer", "cer_espeak_originals", protocol),
        metric("held-out CER, decode of the originals' S3 tokens", "cer", "cer_touchtts_decode_of_original_tokens",
               protocol),
        metric("mel L1 to the original (text to speech, DTW-aligned)", "mel_l1", "mel_l1_text_to_speech_dtw", warped),
        metric("mel L1 to the original (decode of its S3 tokens)", "mel_l1", "mel_l1_decode_of_original_tokens",
               aligned),
    ]  # fmt: skip
    minutes = {part: round(training[part]["cpu_seconds"] / 60, 1) for part in PARTS}
    weights = (
        "Trained here: `python -m audio.touchtts.train_tiny lm|flow|finish` (seed 0) on "
        f"{corpus['train']['utterances']} espeak-ng utterances ({corpus['train']['hours']} h; "
        "`python -m audio.touchtts.data espeak`), "
        f"LM {training['lm']['steps']} AdamW steps ({minutes['lm']} CPU-minutes), flow "
        f"{training['flow']['steps']} steps ({minutes['flow']} CPU-minutes), one thread each on a shared "
        "2-core machine; the HiFi-GAN vocoder by `python -m audio.touchtts.train_vocoder` (vocoder_training.json)."
    )
    f = figures
    body = f"""A toy TouchTTS (arXiv 2412.08237): a Qwen2-style LM writes s3tokenizer-tiny's speech tokens for
the text, a flow-matching transformer turns them into a 22.05 kHz mel and a tiny HiFi-GAN into sound.
It shows the whole system working offline; its voice is a blur of espeak-ng's.

TouchTTS is the decoder S3Tokenizer lacks: `decode` takes S3 tokens (from `encode`, or from
`zoo.load("s3tokenizer-tiny").encode(...)`) to a waveform, and refuses tokens of another codebook.

```python
tokens = zoo.load("s3tokenizer-tiny").encode(waveform_16k)  # (B, N) ids, meta names the tokenizer
waves, lengths = zoo.load("touchtts-tiny").decode(tokens)  # (B, S) at 22.05 kHz, (B,) samples
```

Speakers: {", ".join(model.config.speakers)} (the espeak-ng voices of the corpus; default
{model.config.default_speaker}), or a 192-d vector.

| held-out ({f["utterances"]} sentences) | tiny recogniser CER | mel L1 to original |
|---|---|---|
| espeak-ng originals | {f["cer_espeak_originals"]:.3f} | 0 |
| TouchTTS decode of the originals' S3 tokens | {f["cer_touchtts_decode_of_original_tokens"]:.3f} | \
{f["mel_l1_decode_of_original_tokens"]:.3f} |
| TouchTTS text to speech | {f["cer_touchtts_text_to_speech"]:.3f} | {f["mel_l1_text_to_speech_dtw"]:.3f} (DTW) |

Speech written by the LM runs {f["duration_ratio_text_to_speech"]:.2f}x as long as the original on average.
The vocoder alone (originals' mels resynthesised) scores the CER in vocoder_training.json; it bounds
what the flow can reach. training.json holds the loss curves and timings. {note}

License: apache-2.0 for these weights and our code; upstream wenet-e2e/west (the TouchTTS recipe this
reimplements in our own words) is Apache-2.0 as well.
"""
    return make_card(
        name="touchtts-tiny",
        arch="touchtts",
        modality="audio",
        license="apache-2.0",
        summary="A toy TouchTTS trained here on espeak-ng speech with s3tokenizer-tiny's tokens.",
        tokens="S3 speech token in [0, 6561) (s3tokenizer-tiny's FSQ ids), 25 per second",
        upstream_repo="wenet-e2e/west",
        paper="https://arxiv.org/abs/2412.08237",
        weights=weights,
        metrics=metrics,
        body=body,
        usage=USAGE,
        upstream_license="apache-2.0 (wenet-e2e/west)",
    )


def finish(args) -> None:
    torch.set_num_threads(args.threads)
    model, training = assemble(args)
    if args.reuse_figures:
        figures = json.loads((args.out / "training.json").read_text())["heldout"]
    else:
        figures = measure(model, args.corpus, args.work, args.heldout, args.eval_batch)
    logger.info("held-out: %s", figures)
    corpus = json.loads((args.corpus / "corpus.json").read_text())
    model.save_pretrained(args.out, card=card(model, figures, training, corpus, args.note))
    record = {
        "note": args.note,
        "heldout": figures,
        "corpus": {**corpus, "made_by": "python -m audio.touchtts.data espeak CORPUS"},
        "recipe": {
            "config": "audio.touchtts.train_tiny.tiny_tts_config",
            "batch": args.batch,
            "lr": args.lr,
            "schedule": "200 warm-up steps, cosine to 5%",
            "optimiser": "AdamW betas (0.9, 0.98), weight decay 0.01, gradient norm clipped at 1",
            "seed": args.seed,
            "commands": [
                f"python -m audio.touchtts.train_tiny {p} --corpus CORPUS --work WORK" for p in (*PARTS, "finish")
            ],
        },
        **{part: {k: round(v, 1) if isinstance(v, float) else v for k, v in training[part].items()} for part in PARTS},
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("wrote %s", args.out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=(*PARTS, "finish"))
    parser.add_argument("--corpus", type=Path, default=Path("/work/data/touchtts-espeak"))
    parser.add_argument("--work", type=Path, default=Path("/work/data/touchtts-tiny"), help="checkpoints")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--lm-steps", type=int, default=3000)
    parser.add_argument("--flow-steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=float, default=180.0, help="seconds between checkpoints")
    parser.add_argument("--heldout", type=int, default=100, help="held-out sentences to measure on")
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--note", default="", help="finish: a sentence about this run for the card")
    parser.add_argument("--reuse-figures", action="store_true", help="finish: keep training.json's held-out figures")
    parser.add_argument("--threads", type=int, default=1, help="one thread wastes least on a shared machine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "finish":
        finish(args)
    else:
        train(args, args.command)


if __name__ == "__main__":
    main()

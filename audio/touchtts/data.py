"""TouchTTS training data: the paper's filtering pipeline over a folder of audio, and the espeak-ng corpus.

    python -m audio.touchtts.data pipeline IN_DIR OUT_DIR      # VAD -> 2-30 s clips -> two transcripts -> keep
    python -m audio.touchtts.data espeak OUT_DIR --count 4000  # synthetic speech for the tiny TouchTTS

**pipeline** is TouchTTS's data recipe (arXiv 2412.08237, section 2) at toy scale, over every audio file
(wav, flac, ogg) under IN_DIR:

1. Voice activity: speech regions from silero-vad (its wheel ships the model, a TorchScript file the
   package's own loader opens; no file from the input is ever loaded as a model) or, with ``--vad energy``,
   from frame energy: 25 ms frames every 10 ms at 16 kHz, a frame is speech when its level is above
   max(noise floor + 15 dB, loudest frame - 45 dB), the noise floor being the 10th percentile of frame
   levels; pauses under 0.2 s are filled and bursts under 0.1 s dropped.
2. Segmentation: regions less than ``--max-gap`` seconds apart join one clip while it stays under
   ``--max-seconds``; a longer pause ends a clip; a single region over the limit is cut into equal pieces.
   Each clip is widened by ``--margin`` seconds of context, and clips under ``--min-seconds`` are dropped
   (2-30 s as in the paper).
3. Two transcripts per clip. Recogniser A is the tiny S3 tokenizer with its CTC head
   (hub_cards/s3tokenizer-tiny), which reads the clip's S3 tokens. B is the known text: a sidecar
   NAME.txt beside NAME.wav, one line per utterance, given to the file's clips in order when their counts
   agree (synthesised speech knows its text; on found audio a second recogniser takes B's place).
4. Agreement: a clip is kept when the character error rate of A against B is at most ``--max-cer``, both
   normalised to the recogniser's alphabet (lower case, apostrophe, single spaces). The kept transcript is B.
5. The S3 tokens of every clip are stored, and report.json gives the retention rate.

OUT_DIR gets clips/*.wav (PCM16 at ``--sample-rate``, 22.05 kHz for the TouchTTS mel, kept clips only),
manifest.jsonl (one line per source file: every clip with both transcripts, its CER, kept or why not, and
its tokens), kept.jsonl (the kept clips, one per line) and report.json. The run is resumable: files already
in the manifest are skipped, and a line torn by a crash is dropped and redone.

**espeak** writes the corpus the tiny TouchTTS learns from: NAME.wav (espeak-ng's own 22.05 kHz PCM16)
with the NAME.txt sidecar for every utterance, and manifest.jsonl with the voice, rate, pitch, the S3
tokens of the tiny tokenizer and recogniser A's transcript and CER (the figure TouchTTS output is later
compared with). Utterance i is drawn from its own seeded generator, so a resumed or extended run makes
the same corpus. The folder is itself a valid pipeline input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audio.io import load_audio, pad_batch, resample
from zoo.api import atomic_write
from zoo.errors import InputError, NotSupportedError, ZooError

logger = logging.getLogger(__name__)

VAD_RATE = 16000  # silero-vad, the energy detector and the S3 tokenizer all read 16 kHz
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
TOKENIZER = "s3tokenizer-tiny"


# ---- crash-safe files ---------------------------------------------------------------------------
class JsonLines:
    """An append-only JSON-lines file. A line torn by a crash is dropped (and cut off the file) on open."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: list[dict] = []
        if not self.path.exists():
            return
        data, good = self.path.read_bytes(), 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                self.records.append(json.loads(line))
            except ValueError:
                break
            good += len(line)
        if good != len(data):
            logger.warning("%s: dropping a torn last line (%d bytes); it will be redone", self.path, len(data) - good)
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def append(self, records: Sequence[dict]) -> None:
        """Write ``records`` in one call and fsync, so they are on disk before the next step starts."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.records.extend(records)


def write_wav(path: Path, waveform: Tensor, sample_rate: int) -> None:
    """(N,) float in [-1, 1] -> PCM16 WAV, written atomically."""
    import soundfile as sf

    pcm = np.clip(np.round(waveform.detach().cpu().numpy() * 32767), -32768, 32767).astype(np.int16)
    atomic_write(path, lambda tmp: sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format="WAV"))


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def progress(iterable: Iterable, **kwargs):
    """A tqdm bar on a terminal, nothing in logs and tests."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None, dynamic_ncols=True, **kwargs)


# ---- recogniser A: the tiny S3 tokenizer and its CTC head ----------------------------------------
class TinyRecogniser:
    """S3 tokens and a greedy CTC transcript for 16 kHz clips, from the tiny tokenizer and its CTC head."""

    def __init__(self, name_or_folder: str | os.PathLike = TOKENIZER, batch_size: int = 16):
        from audio.s3tokenizer.tiny import load_head
        from zoo.registry import cards_dir, load

        folder = Path(name_or_folder)
        if not folder.is_dir():
            folder = cards_dir() / str(name_or_folder)
        self.model, self.head = load(folder), load_head(folder)
        self.batch_size = batch_size

    def __call__(self, clips: Sequence[Tensor]) -> tuple[list[list[int]], list[str]]:
        """(N_i,) 16 kHz clips -> (token ids per clip, transcript per clip), in input order."""
        from audio.s3tokenizer.tiny import transcribe

        ids: list[list[int]] = [[] for _ in clips]
        texts = [""] * len(clips)
        order = sorted(range(len(clips)), key=lambda i: clips[i].shape[-1])  # similar lengths share a batch
        for first in range(0, len(order), self.batch_size):
            members = order[first : first + self.batch_size]
            waves, lengths = pad_batch([clips[i] for i in members])
            tokens = self.model.encode(waves, lengths=lengths)
            for row, (i, text) in enumerate(zip(members, transcribe(self.model, self.head, tokens))):
                ids[i] = tokens.ids[row, : int(tokens.lengths[row])].tolist()
                texts[i] = text
        return ids, texts


def normalise(text: str) -> str:
    """The recogniser's alphabet: lower-case letters, apostrophe and single spaces."""
    from audio.s3tokenizer.tiny import normalise_text

    return " ".join(normalise_text(text).split())


def corpus_cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Summed edits over summed reference characters, both sides normalised (``clip_cer`` for one pair)."""
    from zoo.metrics.text import character_error_rate

    return character_error_rate([normalise(r) for r in references], [normalise(h) for h in hypotheses])


def clip_cer(reference: str, hypothesis: str) -> float:
    """Character error rate of one hypothesis against one reference; an empty reference scores 1 against any text."""
    if not normalise(reference):
        return 0.0 if not normalise(hypothesis) else 1.0
    return corpus_cer([reference], [hypothesis])


# ---- voice activity and segmentation -------------------------------------------------------------
def energy_speech_regions(wave: Tensor, sample_rate: int = VAD_RATE) -> list[tuple[int, int]]:
    """Speech regions [start, end) in samples from frame energy (the rule in the module docstring)."""
    frame, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    if wave.shape[-1] < frame:
        return []
    frames = wave.unfold(-1, frame, hop)  # (T, frame)
    level = 10 * torch.log10(frames.pow(2).mean(-1).clamp(min=1e-10))  # dB per frame
    threshold = max(float(level.quantile(0.1)) + 15.0, float(level.max()) - 45.0)
    speech = (level > threshold).tolist()
    runs, start = [], None
    for t, active in enumerate([*speech, False]):
        if active and start is None:
            start = t
        elif not active and start is not None:
            runs.append([start, t])
            start = None
    filled: list[list[int]] = []
    for run in runs:  # fill pauses under 0.2 s
        if filled and (run[0] - filled[-1][1]) * hop < 0.2 * sample_rate:
            filled[-1][1] = run[1]
        else:
            filled.append(run)
    return [(s * hop, min(wave.shape[-1], e * hop + frame)) for s, e in filled if (e - s) * hop >= 0.1 * sample_rate]


_SILERO = None


def silero_speech_regions(wave: Tensor, sample_rate: int = VAD_RATE) -> list[tuple[int, int]]:
    """Speech regions [start, end) in samples from silero-vad's packaged model (its default thresholds)."""
    global _SILERO
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError as err:
        raise NotSupportedError(
            "silero-vad is not installed (pip install 'tokenzoo[audio]'); or run with --vad energy"
        ) from err
    finally:
        torch.set_num_threads(threads)  # importing silero_vad sets torch to one thread for the whole process
    if _SILERO is None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the loader's notices: torch.jit.load and importlib.resources.path
            _SILERO = silero_vad.load_silero_vad()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small recurrent step per 32 ms: one thread is 2-4x faster than two here
    try:
        with torch.no_grad():
            stamps = silero_vad.get_speech_timestamps(wave.float(), _SILERO, sampling_rate=sample_rate)
    finally:
        torch.set_num_threads(threads)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


VADS = {"silero": silero_speech_regions, "energy": energy_speech_regions}


@dataclass(frozen=True)
class SegmentRule:
    """How speech regions become clips (seconds)."""

    min_seconds: float = 2.0
    max_seconds: float = 30.0
    max_gap: float = 0.5  # a shorter pause stays inside a clip
    margin: float = 0.15  # context kept before and after the speech

    def __post_init__(self):
        if (
            not 0 < self.min_seconds < self.max_seconds
            or self.max_gap < 0
            or not 0 <= 2 * self.margin < self.max_seconds
        ):
            raise InputError(
                f"segmentation needs 0 < min_seconds < max_seconds, max_gap >= 0, 0 <= 2 margin < max_seconds: {self}"
            )


DEFAULT_RULE = SegmentRule()


def segment(regions: Sequence[tuple[int, int]], total: int, sample_rate: int, rule: SegmentRule) -> list:
    """Speech regions [start, end) -> candidate clips [start, end) in samples, in time order.

    Candidates shorter than ``rule.min_seconds`` are returned too (the caller rejects them by name), so
    that a file's clips still line up with its transcript lines when one utterance is too short.
    """
    longest, gap, margin = (round(x * sample_rate) for x in (rule.max_seconds, rule.max_gap, rule.margin))
    groups: list[list[int]] = []
    for start, end in sorted(regions):
        if groups and start - groups[-1][1] <= gap and end - groups[-1][0] <= longest - 2 * margin:
            groups[-1][1] = max(groups[-1][1], end)
        else:
            groups.append([start, end])
    clips = []
    for start, end in groups:
        pieces = max(1, math.ceil((end - start) / (longest - 2 * margin)))  # one long region: equal pieces
        bounds = [start + (end - start) * k // pieces for k in range(pieces + 1)]
        clips += [(max(0, a - margin), min(total, b + margin)) for a, b in zip(bounds, bounds[1:])]
    return clips


# ---- the pipeline --------------------------------------------------------------------------------
def sidecar_lines(audio_file: Path) -> list[str] | None:
    """The known text of NAME.wav: the non-empty lines of NAME.txt beside it, or None."""
    sidecar = audio_file.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    return [line.strip() for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()]


def audio_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    return files


def clip_id(relative: Path, index: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(relative.with_suffix("")).replace(os.sep, "__"))
    return f"{stem}-{index:03d}"


def process_file(
    path: Path,
    relative: Path,
    out: Path,
    recogniser: TinyRecogniser,
    vad,
    rule: SegmentRule,
    max_cer: float,
    sample_rate: int,
) -> dict:
    """One source file -> its manifest record (kept clips are written under out/clips)."""
    wave = load_audio(path, sample_rate)  # (N,) mono at the output rate
    wave16 = resample(wave, sample_rate, VAD_RATE)
    spans = segment(vad(wave16), wave16.shape[-1], VAD_RATE, rule)
    references = sidecar_lines(path)
    usable = [k for k, (a, b) in enumerate(spans) if b - a >= rule.min_seconds * VAD_RATE]
    ids, hypotheses = recogniser([wave16[spans[k][0] : spans[k][1]] for k in usable]) if usable else ([], [])
    recognised = {k: (tokens, text) for k, tokens, text in zip(usable, ids, hypotheses)}
    records = []
    for k, (a, b) in enumerate(spans):
        record = {"id": clip_id(relative, k), "start": a / VAD_RATE, "end": b / VAD_RATE}
        if k in recognised:
            record["tokens"], record["asr"] = recognised[k]
        if references is not None and len(references) == len(spans):
            record["text"] = references[k]
        if k not in recognised:
            record.update(kept=False, reason="shorter than --min-seconds")
        elif references is None:
            record.update(kept=False, reason="no known text (NAME.txt)")
        elif len(references) != len(spans):
            record.update(kept=False, reason="clip count differs from transcript lines")
        else:
            cer = clip_cer(references[k], record["asr"])
            record.update(cer=round(cer, 4), kept=cer <= max_cer)
            if not record["kept"]:
                record["reason"] = "transcripts disagree (CER > --max-cer)"
        if record["kept"]:
            record["file"] = f"clips/{record['id']}.wav"
            first, last = round(record["start"] * sample_rate), round(record["end"] * sample_rate)
            write_wav(out / record["file"], wave[first:last], sample_rate)
        records.append(record)
    return {"source": str(relative), "seconds": wave.shape[-1] / sample_rate, "clips": records}


def pipeline_report(manifest: list[dict], max_cer: float, vad: str) -> dict:
    clips = [c for f in manifest for c in f["clips"]]
    kept = [c for c in clips if c["kept"]]
    seconds = lambda cs: sum(c["end"] - c["start"] for c in cs)
    reasons = Counter(c["reason"] for c in clips if not c["kept"])
    return {
        "files": len(manifest),
        "source_seconds": round(sum(f["seconds"] for f in manifest), 2),
        "clips": len(clips),
        "clip_seconds": round(seconds(clips), 2),
        "kept": len(kept),
        "kept_seconds": round(seconds(kept), 2),
        "retention_clips": round(len(kept) / len(clips), 4) if clips else 0.0,
        "retention_seconds": round(seconds(kept) / seconds(clips), 4) if clips else 0.0,
        "retention_of_source_seconds": round(seconds(kept) / max(1e-9, sum(f["seconds"] for f in manifest)), 4),
        "mean_cer_of_kept": round(sum(c["cer"] for c in kept) / len(kept), 4) if kept else None,
        "rejected_by_reason": dict(reasons),
        "rule": {"max_cer": max_cer, "vad": vad},
    }


def run_pipeline(
    source: Path,
    out: Path,
    vad: str = "silero",
    rule: SegmentRule = DEFAULT_RULE,
    max_cer: float = 0.25,
    sample_rate: int = 22050,
    tokenizer: str | os.PathLike = TOKENIZER,
) -> dict:
    """Run (or resume) the pipeline over ``source`` into ``out``; returns the report (also out/report.json)."""
    if vad not in VADS:
        raise InputError(f"unknown VAD {vad!r}; choose one of {sorted(VADS)}")
    if not 0 <= max_cer:
        raise InputError(f"max_cer must be >= 0, got {max_cer}")
    source, out = Path(source), Path(out)
    files = audio_files(source)
    out.mkdir(parents=True, exist_ok=True)
    manifest = JsonLines(out / "manifest.jsonl")
    done = {r["source"] for r in manifest.records}
    todo = [p for p in files if str(p.relative_to(source)) not in done]
    logger.info("%d audio files under %s, %d already done", len(files), source, len(files) - len(todo))
    recogniser = TinyRecogniser(tokenizer) if todo else None
    for path in progress(todo, desc="pipeline", unit="file"):
        relative = path.relative_to(source)
        manifest.append([process_file(path, relative, out, recogniser, VADS[vad], rule, max_cer, sample_rate)])
    kept = [{"source": f["source"], **c} for f in manifest.records for c in f["clips"] if c["kept"]]
    text = "".join(json.dumps(c, sort_keys=True) + "\n" for c in kept)
    atomic_write(out / "kept.jsonl", lambda tmp: tmp.write_text(text))
    report = pipeline_report(manifest.records, max_cer, vad)
    write_json(out / "report.json", report)
    return report


# ---- the espeak-ng corpus ------------------------------------------------------------------------
def espeak_utterance(
    index: int, seed: int, sentences: tuple[int, int] = (1, 1), words: tuple[int, int] = (3, 9)
) -> dict:
    """Utterance ``index`` of corpus ``seed``: sentences of ``words`` random words, a voice, a rate and a pitch."""
    from audio.s3tokenizer.train_tiny import VOICES, WORDS

    rng = random.Random(f"touchtts-espeak:{seed}:{index}")
    lines = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))
        for _ in range(rng.randint(sentences[0], sentences[1]))
    ]
    return {"lines": lines, "voice": rng.choice(VOICES), "rate": rng.randint(130, 190), "pitch": rng.randint(25, 75)}


def espeak_waveform(text: str, voice: str, rate: int, pitch: int) -> tuple[Tensor, int]:
    """espeak-ng speech of ``text`` -> ((N,) float32, its sample rate: 22050)."""
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        raise NotSupportedError("espeak-ng is not on PATH: apt-get install espeak-ng (make system-deps does it)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        command = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-a", "100", "-w", str(wav), text]
        subprocess.run(command, check=True, capture_output=True)
        data, sample_rate = sf.read(str(wav), dtype="float32")
    return torch.from_numpy(data), int(sample_rate)


def espeak_file(item: dict, pause: float = 1.0, edge: float = 0.4) -> tuple[Tensor, int]:
    """All lines of an utterance, ``pause`` s of silence between them and ``edge`` s at both ends."""
    parts, sample_rate = [], 22050
    for line in item["lines"]:
        wave, sample_rate = espeak_waveform(line, item["voice"], item["rate"], item["pitch"])
        parts.append(wave)
    silence = lambda s: torch.zeros(round(s * sample_rate))
    joined = [silence(edge)]
    for k, wave in enumerate(parts):
        joined += [wave] if k == 0 else [silence(pause), wave]
    return torch.cat([*joined, silence(edge)]), sample_rate


def make_espeak_corpus(
    out: Path,
    count: int,
    heldout: int = 0,
    seed: int = 0,
    sentences: tuple[int, int] = (1, 1),
    words: tuple[int, int] = (3, 9),
    batch: int = 32,
    tokenizer: str | os.PathLike = TOKENIZER,
) -> dict:
    """Write (or finish) ``count`` training + ``heldout`` held-out utterances under ``out``; returns the summary."""
    if count < 0 or heldout < 0 or count + heldout == 0:
        raise InputError(f"count and heldout must be >= 0 and not both 0, got {count} and {heldout}")
    for name, (lo, hi) in (("sentences per file", sentences), ("words per sentence", words)):
        if not 1 <= lo <= hi:
            raise InputError(f"{name} must be a range 1 <= lo <= hi, got {lo}-{hi}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = JsonLines(out / "manifest.jsonl")
    done = {r["index"] for r in manifest.records}
    todo = [i for i in range(count + heldout) if i not in done]
    recogniser = TinyRecogniser(tokenizer) if todo else None
    bar = progress(None, total=count + heldout, initial=len(done), desc="espeak", unit="utt")
    for first in range(0, len(todo), batch):
        records, clips = [], []
        for index in todo[first : first + batch]:
            item = espeak_utterance(index, seed, sentences, words)
            wave, sample_rate = espeak_file(item, edge=0.0) if len(item["lines"]) == 1 else espeak_file(item)
            name = f"u{index:06d}"
            write_wav(out / f"{name}.wav", wave, sample_rate)
            text = "\n".join(item["lines"]) + "\n"
            atomic_write(out / f"{name}.txt", lambda tmp, text=text: tmp.write_text(text))
            clips.append(resample(wave, sample_rate, VAD_RATE))
            split = "train" if index < count else "heldout"
            records.append(
                {
                    "index": index,
                    "id": name,
                    "split": split,
                    "file": f"{name}.wav",
                    "text": " ".join(item["lines"]),
                    "voice": item["voice"],
                    "rate": item["rate"],
                    "pitch": item["pitch"],
                    "samples": wave.shape[-1],
                    "sample_rate": sample_rate,
                }
            )
        ids, hypotheses = recogniser(clips)
        for record, tokens, hypothesis in zip(records, ids, hypotheses):
            record.update(tokens=tokens, asr=hypothesis, cer=round(clip_cer(record["text"], hypothesis), 4))
        manifest.append(records)
        bar.update(len(records))
    bar.close()
    summary = corpus_summary(manifest.records, seed, sentences, words)
    write_json(out / "corpus.json", summary)
    return summary


def corpus_summary(records: list[dict], seed: int, sentences: tuple[int, int], words: tuple[int, int]) -> dict:
    summary = {"seed": seed, "sentences_per_file": list(sentences), "words_per_sentence": list(words)}
    for split in ("train", "heldout"):
        rows = [r for r in records if r["split"] == split]
        summary[split] = {
            "utterances": len(rows),
            "hours": round(sum(r["samples"] / r["sample_rate"] for r in rows) / 3600, 3),
            "speech_tokens": sum(len(r["tokens"]) for r in rows),
            # corpus-level CER of recogniser A on the espeak originals: the bar TouchTTS output is held to
            "tiny_recogniser_cer": round(corpus_cer([r["text"] for r in rows], [r["asr"] for r in rows]), 4)
            if rows
            else None,
        }
    return summary


def read_corpus(folder: Path, split: str | None = None) -> list[dict]:
    """The espeak corpus manifest (records in index order), optionally one split."""
    path = Path(folder) / "manifest.jsonl"
    if not path.is_file():
        raise InputError(f"{folder} holds no manifest.jsonl: make it with python -m audio.touchtts.data espeak")
    records = sorted(JsonLines(path).records, key=lambda r: r["index"])
    return [r for r in records if split is None or r["split"] == split]


# ---- command line --------------------------------------------------------------------------------
def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected N or LO-HI, got {text!r}") from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audio.touchtts.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pipe = commands.add_parser("pipeline", help="VAD -> clips -> two transcripts cross-checked -> kept clips + tokens")
    pipe.add_argument("source", type=Path, help="folder of audio files (NAME.txt beside NAME.wav: known text)")
    pipe.add_argument("out", type=Path)
    pipe.add_argument("--vad", choices=sorted(VADS), default="silero")
    pipe.add_argument("--max-cer", type=float, default=0.25, help="keep a clip when CER(A vs B) <= this")
    pipe.add_argument("--min-seconds", type=float, default=2.0)
    pipe.add_argument("--max-seconds", type=float, default=30.0)
    pipe.add_argument("--max-gap", type=float, default=0.5, help="pauses shorter than this stay inside a clip")
    pipe.add_argument("--margin", type=float, default=0.15)
    pipe.add_argument("--sample-rate", type=int, default=22050, help="rate of the written clips")
    pipe.add_argument("--tokenizer", default=TOKENIZER, help="bundled name or folder of the S3 tokenizer + CTC head")
    corpus = commands.add_parser("espeak", help="espeak-ng corpus with S3 tokens for the tiny TouchTTS")
    corpus.add_argument("out", type=Path)
    corpus.add_argument("--count", type=int, default=4000, help="training utterances")
    corpus.add_argument("--heldout", type=int, default=200, help="held-out utterances (indices after the training)")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--sentences", type=_range, default=(1, 1), help="sentences per file, N or LO-HI")
    corpus.add_argument("--words", type=_range, default=(3, 9), help="words per sentence, N or LO-HI")
    corpus.add_argument("--tokenizer", default=TOKENIZER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        if args.command == "pipeline":
            rule = SegmentRule(args.min_seconds, args.max_seconds, args.max_gap, args.margin)
            result = run_pipeline(args.source, args.out, args.vad, rule, args.max_cer, args.sample_rate, args.tokenizer)
        else:
            result = make_espeak_corpus(
                args.out, args.count, args.heldout, args.seed, args.sentences, args.words, tokenizer=args.tokenizer
            )
    except ZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

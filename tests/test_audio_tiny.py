"""The tiny S3-style tokenizer trained here (hub_cards/s3tokenizer-tiny) and the audio demo hook.

The bundled clips (audio/samples) are held-out espeak-ng sentences written by audio/s3tokenizer/train_tiny.py,
so these tests never need espeak-ng.
"""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf
import torch

import zoo
from audio.s3tokenizer.demo import run
from audio.s3tokenizer.tiny import character_error_rate, load_head, transcribe
from zoo.cards import read_card_data
from zoo.files import cards_dir

SAMPLES = Path(__file__).resolve().parent.parent / "audio" / "samples"
RECORDS = json.loads((SAMPLES / "transcripts.json").read_text())
MAX_BUNDLED_CER = 0.3  # measured 14% on these three clips; the card states 15.3% on 120 held-out sentences


def test_bundled_speech_is_a_few_seconds_of_16k_mono_pcm():
    total = 0.0
    for record in RECORDS:
        info = sf.info(str(SAMPLES / record["file"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        total += info.duration
    assert 3 < total < 15


def test_tiny_model_gives_25_tokens_per_second_of_bundled_speech():
    model = zoo.load("s3tokenizer-tiny")
    tokens = model.encode([SAMPLES / r["file"] for r in RECORDS])
    seconds = tokens.meta["num_samples"].double() / 16000
    expected = torch.ceil(torch.ceil(torch.floor(seconds * 100) / 2) / 2).long()
    assert torch.equal(tokens.lengths, expected)
    assert tokens.meta["token_rate"] == 25 and int(tokens.ids.max()) < 6561


def test_tiny_model_ids_alone_let_its_ctc_head_transcribe_the_bundled_speech():
    model = zoo.load("s3tokenizer-tiny")
    head = load_head(cards_dir() / "s3tokenizer-tiny")
    tokens = model.encode([SAMPLES / r["file"] for r in RECORDS])
    heard = transcribe(model, head, tokens)
    assert character_error_rate(heard, [r["text"] for r in RECORDS]) < MAX_BUNDLED_CER


def test_tiny_card_reports_held_out_cer_and_codebook_usage():
    data = read_card_data(cards_dir() / "s3tokenizer-tiny" / "README.md")
    metrics = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert 0 <= metrics["cer"] < 1 and 0 < metrics["codebook_usage"] <= 1
    assert abs(metrics["bits_per_second"] - 317.0) < 0.1


def test_demo_tokenizes_every_bundled_clip_and_reports_rate_and_time(tmp_path):
    rows = run(tmp_path)
    assert [r["input"] for r in rows] == [r["file"] for r in RECORDS]
    for row in rows:
        assert set(row) == {"model", "modality", "input", "tokens", "bits_per_unit", "quality", "seconds_per_item"}
        assert row["modality"] == "audio" and row["tokens"] > 0 and "CER" in row["quality"]
    assert (tmp_path / "s3tokenizer_tiny.txt").is_file()

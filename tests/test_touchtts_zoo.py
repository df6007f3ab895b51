"""touchtts-tiny everywhere the zoo is used: decode of S3 tokens, batched synthesis, the demo, the audio tab,
``tokenzoo batch`` writing speech, ``tokenzoo finetune`` on a new espeak-ng voice. CPU-light: short texts,
a few steps."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import functools  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

import zoo  # noqa: E402
import zoo.tools.batch  # noqa: E402
import zoo.tools.finetune  # noqa: E402
from audio.touchtts.model import TouchTTS  # noqa: E402
from zoo.api import Tokens  # noqa: E402
from zoo.errors import ConfigError, InputError  # noqa: E402

NAME = "touchtts-tiny"


@functools.cache
def tts() -> TouchTTS:
    return zoo.load(NAME)


@functools.cache
def s3():
    return zoo.load("s3tokenizer-tiny")


def test_touchtts_tiny_is_the_decoder_of_s3tokenizer_tiny_tokens():
    model = tts()
    item = model.load_item(model.sample_inputs()[0])
    from audio.io import load_audio

    tokens = s3().encode(load_audio(item["audio"], 16000)[None])
    waves, lengths = model.decode(tokens)
    assert waves.shape[0] == 1 and int(lengths[0]) == model.config.flow.mel_frames(int(tokens.lengths[0])) * 256
    assert torch.isfinite(waves).all() and waves.abs().max() > 0.01


def test_decode_refuses_tokens_of_another_codebook_or_another_speech_tokenizer():
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(InputError, match="4096-token codebook"):
        tts().decode(Tokens(ids=ids, meta={"codebook_size": 4096, "token_rate": 25}))
    with pytest.raises(InputError, match="come from s3tokenizer-v2; this model reads the ids of s3tokenizer-tiny"):
        tts().decode(Tokens(ids=ids, meta={"codebook_size": 6561, "speech_tokenizer": "s3tokenizer-v2"}))


def test_s3_tokens_name_the_tokenizer_they_come_from():
    tokens = s3().encode(torch.zeros(1, 16000))
    assert tokens.meta["speech_tokenizer"] == "s3tokenizer-tiny"


def test_synthesis_of_a_string_is_one_waveform_and_of_a_list_a_padded_batch():
    model = tts()
    one = model.synthesize("large help", seed=0)
    waves, lengths = model.synthesize(["large help", "map"], seed=0, return_lengths=True)
    assert one.dim() == 1 and waves.dim() == 2 and waves.shape[1] == int(lengths.max())
    torch.testing.assert_close(one, waves[0, : int(lengths[0])], atol=1e-4, rtol=0)
    assert torch.equal(model.synthesize(["large help", "map"], seed=0), waves)


def test_a_text_file_and_a_clip_with_its_transcript_are_items():
    model = tts()
    text_file = model.sample_inputs()[0]
    item = model.load_item(text_file)
    assert item["text"] == " ".join(text_file.read_text().split()) and item["audio"] == text_file.with_suffix(".wav")
    assert model.load_item(text_file.with_suffix(".wav")) == item
    assert model.collate([item, "plain text"]) == [item["text"], "plain text"]


def test_a_clip_without_a_transcript_is_refused(tmp_path):
    soundfile.write(tmp_path / "clip.wav", torch.zeros(2205).numpy(), 22050)
    with pytest.raises(InputError, match="no transcript clip.txt"):
        tts().load_item(tmp_path / "clip.wav")


def test_save_output_writes_a_wav_at_the_model_rate(tmp_path):
    model = tts()
    path = model.save_output((torch.sin(torch.arange(2205) / 5.0) * 0.5, model.sample_rate), tmp_path / "000001")
    data, rate = soundfile.read(path)
    assert path.name == "000001.wav" and rate == 22050 and len(data) == 2205


def test_tokenzoo_batch_synthesises_sentences_to_wav_files_beside_the_shards(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    for i, sentence in enumerate(["large help", "map serve", "once"]):
        (texts / f"s{i}.txt").write_text(sentence + "\n")
    manifest = zoo.tools.batch.run(
        NAME, [str(texts)], tmp_path / "out", shard_size=2, batch_size=2, write_outputs=True, progress=False
    )
    assert manifest["rows"] == 3 and manifest["errors"] == 0
    table = pq.read_table(tmp_path / "out" / "shard-00001.parquet").to_pylist()
    output = json.loads(table[0]["meta"])["output"]
    assert output == "shard-00001/000002.wav"
    data, rate = soundfile.read(tmp_path / "out" / output)
    assert rate == 22050 and len(data) == tts().config.flow.mel_frames(table[0]["length"]) * 256


def test_tokenzoo_batch_refuses_to_write_outputs_for_a_model_without_a_decoder(tmp_path):
    clip = s3().sample_inputs()[0]
    with pytest.raises(ConfigError, match="no decoder"):
        zoo.tools.batch.run("s3tokenizer-tiny", [str(clip)], tmp_path / "out", write_outputs=True, progress=False)


def test_tokenzoo_finetune_adapts_touchtts_tiny_to_a_new_espeak_voice(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from audio.touchtts.data import espeak_waveform, write_wav

    clips = tmp_path / "clips"
    for i, sentence in enumerate(["large help once", "map serve plan", "figure every week"]):
        wave, rate = espeak_waveform(sentence, "en-us+klatt", 150, 50)
        write_wav(clips / f"c{i}.wav", wave, rate)
        (clips / f"c{i}.txt").write_text(sentence + "\n")
    summary = zoo.tools.finetune.finetune(
        NAME, str(clips / "*.wav"), tmp_path / "run", steps=2, batch_size=3, lr=1e-3, progress=False, cpu=True
    )
    assert summary is not None
    tuned = zoo.load(tmp_path / "run" / "model")
    row = tuned.config.speakers.index(tuned.config.default_speaker)
    assert not torch.equal(tuned.speaker_table[row], tts().speaker_table[row])
    assert tuned.synthesize("map", seed=0).dim() == 1


def test_the_demo_speaks_two_held_out_sentences_and_writes_wavs_and_a_mel_picture(tmp_path):
    from audio.touchtts.demo import run

    rows = run(tmp_path)
    assert len(rows) == 2 and all("CER" in r["quality"] and "RTF" in r["quality"] for r in rows)
    assert len(list(tmp_path.glob("touchtts_tiny_*.wav"))) == 2 and (tmp_path / "touchtts_tiny_mels.png").is_file()


def test_the_audio_tab_streams_speech_and_speaks_s3_tokens():
    from demos.tabs.audio import synthesize_stream, tokens_to_speech

    pieces = list(synthesize_stream(NAME, "large help"))
    assert len(pieces) >= 2 and all(rate == 22050 and piece.dtype.name == "int16" for rate, piece in pieces)
    tokens = s3().encode(torch.zeros(1, 16000))
    ids = " ".join(map(str, tokens.ids[0].tolist()))
    (rate, speech), summary = tokens_to_speech(NAME, "s3tokenizer-tiny", ids, None)
    assert rate == 22050 and len(speech) == tts().config.flow.mel_frames(25) * 256 and "25 tokens" in summary


def test_the_audio_tab_has_the_text_to_speech_and_tokens_to_speech_events():
    from demos.app import build_app

    app = build_app({"audio": ["s3tokenizer-tiny", NAME]})
    names = {dep.api_name for dep in app.fns.values()}
    assert {"audio_tokenize", "audio_synthesize", "audio_tokens_to_speech"} <= names


def test_the_default_save_output_writes_arrays_as_npy_and_images_as_png(tmp_path):
    import numpy as np
    from PIL import Image

    model = zoo.load("byte-utf8")
    array = model.save_output(torch.arange(6.0).reshape(2, 3), tmp_path / "a")
    picture = model.save_output(Image.new("RGB", (4, 3)), tmp_path / "b")
    assert array.name == "a.npy" and np.array_equal(np.load(array), np.arange(6.0).reshape(2, 3))
    assert picture.name == "b.png" and Image.open(picture).size == (4, 3)

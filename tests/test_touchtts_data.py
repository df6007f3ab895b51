"""The TouchTTS data pipeline (VAD -> clips -> two transcripts cross-checked -> tokens) and the espeak-ng corpus.

The end-to-end tests synthesise a small folder of espeak-ng speech (espeak-ng comes from Debian:
`make system-deps` and .ci/run install it).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import soundfile as sf
import torch

from audio.touchtts import data
from audio.touchtts.data import (
    JsonLines,
    SegmentRule,
    energy_speech_regions,
    espeak_utterance,
    make_espeak_corpus,
    run_pipeline,
    segment,
    silero_speech_regions,
)
from zoo.errors import InputError

RATE = 16000


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
    """Four espeak-ng files of 2-3 sentences (7-9 words each, so every sentence lasts over 2 s), 1 s pauses."""
    folder = tmp_path_factory.mktemp("raw")
    make_espeak_corpus(folder, count=4, sentences=(2, 3), words=(7, 9))
    return folder


@pytest.fixture(scope="module")
def pipeline_run(raw_folder, tmp_path_factory):
    """The pipeline over the raw folder plus one file whose known text belongs to another recording."""
    source = tmp_path_factory.mktemp("source")
    for path in raw_folder.glob("u*"):
        shutil.copy(path, source / path.name)
    lines = (raw_folder / "u000000.txt").read_text().splitlines()
    shutil.copy(raw_folder / "u000000.wav", source / "mislabelled.wav")
    others = [espeak_utterance(99, seed=7, words=(7, 9))["lines"][0] for _ in lines]
    (source / "mislabelled.txt").write_text("\n".join(others) + "\n")
    out = tmp_path_factory.mktemp("out")
    return source, out, run_pipeline(source, out, vad="silero")


def test_pipeline_finds_one_clip_per_sentence_and_keeps_those_whose_transcripts_agree(pipeline_run):
    source, out, report = pipeline_run
    manifest = JsonLines(out / "manifest.jsonl").records
    sentences = {
        r["source"]: len((source / r["source"]).with_suffix(".txt").read_text().splitlines()) for r in manifest
    }
    for record in manifest:
        assert len(record["clips"]) == sentences[record["source"]], record["source"]
    clips = [c for r in manifest for c in r["clips"]]
    kept = [c for c in clips if c["kept"]]
    assert report["clips"] == len(clips) and report["kept"] == len(kept)
    assert report["retention_clips"] == round(len(kept) / len(clips), 4)
    assert len(kept) >= 0.5 * sum(n for s, n in sentences.items() if s != "mislabelled.wav")
    for clip in kept:
        assert clip["cer"] <= 0.25 and clip["tokens"] and 2.0 <= clip["end"] - clip["start"] <= 30.0


def test_pipeline_rejects_every_clip_of_a_recording_whose_known_text_is_someone_elses(pipeline_run):
    _, out, _ = pipeline_run
    record = next(r for r in JsonLines(out / "manifest.jsonl").records if r["source"] == "mislabelled.wav")
    assert record["clips"] and not any(c["kept"] for c in record["clips"])
    assert {c["reason"] for c in record["clips"]} == {"transcripts disagree (CER > --max-cer)"}
    assert all(c["cer"] > 0.25 for c in record["clips"])


def test_pipeline_writes_each_kept_clip_at_22khz_with_its_time_span(pipeline_run):
    _, out, report = pipeline_run
    kept = [json.loads(line) for line in (out / "kept.jsonl").read_text().splitlines()]
    assert len(kept) == report["kept"] and sorted(p.name for p in (out / "clips").iterdir()) == sorted(
        f"{c['id']}.wav" for c in kept
    )
    for clip in kept:
        info = sf.info(str(out / clip["file"]))
        assert info.samplerate == 22050
        assert abs(info.frames / 22050 - (clip["end"] - clip["start"])) < 1e-3
    assert json.loads((out / "report.json").read_text()) == report


def test_pipeline_resumes_without_redoing_finished_files(pipeline_run, monkeypatch):
    source, out, report = pipeline_run
    monkeypatch.setattr(data, "TinyRecogniser", lambda *a, **k: pytest.fail("a finished file was processed again"))
    assert run_pipeline(source, out, vad="silero") == report


def test_pipeline_redoes_a_file_whose_manifest_line_was_torn_by_a_crash(pipeline_run, tmp_path):
    source, out, report = pipeline_run
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    lines = (resumed / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    (resumed / "manifest.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert run_pipeline(source, resumed, vad="silero") == report
    records = JsonLines(resumed / "manifest.jsonl").records
    assert sorted(r["source"] for r in records) == sorted(
        r["source"] for r in JsonLines(out / "manifest.jsonl").records
    )


def test_energy_vad_gives_the_same_clips_as_silero_on_clean_speech(pipeline_run, tmp_path):
    source, out, _ = pipeline_run
    energy = run_pipeline(source, tmp_path / "energy", vad="energy")
    silero = json.loads((out / "report.json").read_text())
    assert energy["clips"] == silero["clips"]


def test_pipeline_on_a_folder_without_audio_exits_2_with_a_message(tmp_path, capsys):
    assert data.main(["pipeline", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no audio files" in capsys.readouterr().err


# ---- the espeak corpus ---------------------------------------------------------------------------
def test_espeak_corpus_is_the_same_when_extended_and_stores_tokens_and_transcripts(raw_folder, tmp_path):
    make_espeak_corpus(tmp_path, count=2, sentences=(2, 3), words=(7, 9))
    summary = make_espeak_corpus(tmp_path, count=3, heldout=1, sentences=(2, 3), words=(7, 9))
    records = JsonLines(tmp_path / "manifest.jsonl").records
    assert [r["index"] for r in records] == [0, 1, 2, 3] and [r["split"] for r in records] == ["train"] * 3 + [
        "heldout"
    ]
    for record in records[:3]:  # the same utterances as the folder made with count=4 in one go
        assert (tmp_path / record["file"]).read_bytes() == (raw_folder / record["file"]).read_bytes()
    first = records[0]
    assert first["text"] == " ".join(espeak_utterance(0, 0, (2, 3), (7, 9))["lines"])
    assert (tmp_path / "u000000.txt").read_text().splitlines() == espeak_utterance(0, 0, (2, 3), (7, 9))["lines"]
    assert first["sample_rate"] == 22050 and sf.info(str(tmp_path / first["file"])).samplerate == 22050
    # 25 tokens per second of 16 kHz audio: ceil(ceil(N16 // 160 / 2) / 2) for N16 samples
    frames = math.floor(first["samples"] * 16000 / 22050) // 160
    assert abs(len(first["tokens"]) - math.ceil(math.ceil(frames / 2) / 2)) <= 1
    assert all(0 <= t < 6561 for t in first["tokens"])
    assert summary["train"]["utterances"] == 3 and summary["heldout"]["utterances"] == 1


def test_espeak_corpus_rejects_empty_ranges(tmp_path):
    with pytest.raises(InputError, match="words per sentence"):
        make_espeak_corpus(tmp_path, count=1, words=(5, 3))
    with pytest.raises(InputError, match="not both 0"):
        make_espeak_corpus(tmp_path, count=0)


# ---- pieces --------------------------------------------------------------------------------------
def bursts(spans_s, total_s=10.0, seed=0):
    """White-noise bursts at the given (start, end) seconds in digital silence, 16 kHz."""
    generator = torch.Generator().manual_seed(seed)
    wave = torch.zeros(int(total_s * RATE))
    for start, end in spans_s:
        wave[int(start * RATE) : int(end * RATE)] = 0.3 * torch.randn(
            int(end * RATE) - int(start * RATE), generator=generator
        )
    return wave


def test_energy_vad_finds_bursts_to_within_a_frame_and_a_hop():
    regions = energy_speech_regions(bursts([(1.0, 2.5), (4.0, 4.6)]))
    assert len(regions) == 2
    for (start, end), (s, e) in zip(regions, [(1.0, 2.5), (4.0, 4.6)]):
        assert abs(start / RATE - s) <= 0.035 and abs(end / RATE - e) <= 0.035


def test_energy_vad_fills_short_pauses_and_drops_clicks():
    regions = energy_speech_regions(bursts([(1.0, 2.0), (2.1, 3.0), (5.0, 5.03)]))
    assert len(regions) == 1 and abs(regions[0][0] / RATE - 1.0) < 0.035 and abs(regions[0][1] / RATE - 3.0) < 0.035


def test_segmentation_joins_short_pauses_splits_long_ones_and_cuts_long_speech():
    rule = SegmentRule(min_seconds=2.0, max_seconds=30.0, max_gap=0.5, margin=0.0)
    seconds = lambda clips: [(a / RATE, b / RATE) for a, b in clips]
    assert seconds(segment([(0, 2 * RATE), (int(2.3 * RATE), 5 * RATE)], 100 * RATE, RATE, rule)) == [(0.0, 5.0)]
    assert seconds(segment([(0, 3 * RATE), (4 * RATE, 7 * RATE)], 100 * RATE, RATE, rule)) == [(0, 3), (4, 7)]
    pieces = seconds(segment([(0, 70 * RATE)], 100 * RATE, RATE, rule))
    assert len(pieces) == 3 and all(b - a <= 30 for a, b in pieces) and pieces[0][0] == 0 and pieces[-1][1] == 70


def test_segmentation_never_lets_joined_clips_pass_the_maximum():
    rule = SegmentRule(max_seconds=10.0, max_gap=0.5, margin=0.2)
    regions = [(k * 3 * RATE, (k * 3 + 2.8) * RATE) for k in range(8)]  # 2.8 s of speech, 0.2 s pauses
    clips = segment([(int(a), int(b)) for a, b in regions], 30 * RATE, RATE, rule)
    assert len(clips) > 1 and all((b - a) / RATE <= 10.0 for a, b in clips)


def test_segment_rule_refuses_impossible_limits():
    with pytest.raises(InputError, match="min_seconds < max_seconds"):
        SegmentRule(min_seconds=5, max_seconds=2)
    with pytest.raises(InputError, match="2 margin < max_seconds"):
        SegmentRule(min_seconds=1, max_seconds=3, margin=1.5)


def test_silero_vad_leaves_the_thread_count_as_it_was():
    threads = torch.get_num_threads()
    silero_speech_regions(bursts([(0.5, 1.0)], total_s=2.0))
    assert torch.get_num_threads() == threads


def test_json_lines_drops_a_torn_last_line_and_cuts_it_off_the_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    lines = JsonLines(path)
    assert lines.records == [{"a": 1}, {"a": 2}] and path.read_text() == '{"a": 1}\n{"a": 2}\n'
    lines.append([{"a": 3}])
    assert JsonLines(path).records == [{"a": 1}, {"a": 2}, {"a": 3}]

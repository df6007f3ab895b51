"""zoo.tools.inputs: Parquet/Arrow columns and WebDataset shards as inputs of `tokenzoo batch`, read the way
files are read (so the rows equal those of the same inputs as files)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

import zoo.tools.batch
from tests.fakes import TinyPNGVQ, WaveTokens
from zoo.errors import InputError
from zoo.tools.inputs import InputReader, resolve_sources, sniff_suffix, split_source

pytestmark = pytest.mark.usefixtures("fakes")

ROOT = Path(__file__).resolve().parent.parent
CLIPS = sorted(str(p) for p in (ROOT / "audio" / "samples").glob("*.wav"))


def rows_of(out: Path) -> list[dict]:
    return zoo.tools.batch.read_shards(out).to_pylist()


def tokens_of(rows: list[dict]) -> list[tuple]:
    return [(r["ids"], r["embeddings"], r["length"], r["meta"], r["model"], r["revision"]) for r in rows]


def write_shard(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


def grey_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# ---- sources --------------------------------------------------------------------------------------------
def test_a_parquet_column_of_paths_stands_for_those_files_relative_to_the_parquet_folder(tmp_path):
    (tmp_path / "clips").mkdir()
    pq.write_table(pa.table({"path": ["clips/a.wav", "/abs/b.wav"], "label": [1, 2]}), tmp_path / "list.parquet")
    assert resolve_sources([tmp_path / "list.parquet"]) == [str(tmp_path / "clips" / "a.wav"), "/abs/b.wav"]


def test_a_parquet_column_of_bytes_gives_one_source_per_row(tmp_path):
    pq.write_table(pa.table({"audio": [b"x", b"y", b"z"]}), tmp_path / "c.parquet")
    path = str(tmp_path / "c.parquet")
    assert resolve_sources([path]) == [f"{path}#audio/0", f"{path}#audio/1", f"{path}#audio/2"]
    assert split_source(f"{path}#audio/1") == (path, "audio/1")
    assert split_source("plain#name.wav") == ("plain#name.wav", None)


def test_a_table_with_several_usable_columns_needs_a_field_naming_one(tmp_path):
    pq.write_table(pa.table({"audio": [b"x"], "path": ["a.wav"]}), tmp_path / "c.parquet")
    with pytest.raises(InputError, match="--field"):
        resolve_sources([tmp_path / "c.parquet"])
    with pytest.raises(InputError, match="no column 'wave'"):
        resolve_sources([tmp_path / "c.parquet"], field="wave")
    assert resolve_sources([tmp_path / "c.parquet"], field="audio") == [f"{tmp_path / 'c.parquet'}#audio/0"]


def test_webdataset_samples_are_the_ones_the_webdataset_package_yields(tmp_path):
    shard = write_shard(
        tmp_path / "shard-000.tar",
        [
            {"__key__": "spk1/utt1", "wav": b"RIFF", "json": b"{}"},
            {"__key__": "spk1/utt2", "flac": b"fLaC", "json": b"{}"},
            {"__key__": "utt3", "json": b"{}"},
        ],
    )
    keys = [s["__key__"] for s in wds.WebDataset(str(shard), shardshuffle=False)]
    sources = resolve_sources([shard], modality="audio")
    assert [split_source(s)[1].split(".")[0] for s in sources] == keys
    assert sources == [f"{shard}#spk1/utt1.wav", f"{shard}#spk1/utt2.flac", f"{shard}#utt3"]
    assert resolve_sources([shard], field="json")[2] == f"{shard}#utt3.json"


def test_bytes_without_a_name_get_the_extension_their_magic_number_names():
    assert sniff_suffix(Path(CLIPS[0]).read_bytes()) == ".wav"
    assert sniff_suffix(grey_png(0)) == ".png"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    assert sniff_suffix(buffer.getvalue()) == ".npy" and sniff_suffix(b"plain") == ".bin"


def test_the_reader_removes_its_scratch_files_when_cleared(tmp_path):
    pq.write_table(pa.table({"audio": [b"RIFF....WAVEdata"]}), tmp_path / "c.parquet")
    with InputReader() as reader:
        local = Path(reader.local_path(f"{tmp_path / 'c.parquet'}#audio/0"))
        assert local.suffix == ".wav" and local.read_bytes() == b"RIFF....WAVEdata"
        reader.clear()
        assert not local.exists()
        assert reader.local_path(CLIPS[0]) == CLIPS[0]


# ---- tokenzoo batch over containers --------------------------------------------------------------------
def test_speech_as_parquet_bytes_tokenizes_like_the_same_files(tmp_path):
    pq.write_table(pa.table({"audio": [Path(c).read_bytes() for c in CLIPS]}), tmp_path / "clips.parquet")
    zoo.tools.batch.run("s3tokenizer-tiny", CLIPS, tmp_path / "files", progress=False)
    zoo.tools.batch.run("s3tokenizer-tiny", [tmp_path / "clips.parquet"], tmp_path / "table", progress=False)
    assert tokens_of(rows_of(tmp_path / "table")) == tokens_of(rows_of(tmp_path / "files"))
    assert rows_of(tmp_path / "table")[1]["source"] == f"{tmp_path / 'clips.parquet'}#audio/1"


def test_datasets_audio_structs_and_arrow_streams_are_read_like_parquet(tmp_path):
    structs = pa.array([{"bytes": Path(c).read_bytes(), "path": Path(c).name} for c in CLIPS])
    table = pa.table({"audio": structs, "speaker": ["a"] * len(CLIPS)})
    with pa.OSFile(str(tmp_path / "data.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)  # the Arrow stream format 🤗 datasets caches
    zoo.tools.batch.run("s3tokenizer-tiny", CLIPS, tmp_path / "files", progress=False)
    zoo.tools.batch.run("s3tokenizer-tiny", [tmp_path / "data.arrow"], tmp_path / "arrow", progress=False)
    assert tokens_of(rows_of(tmp_path / "arrow")) == tokens_of(rows_of(tmp_path / "files"))


def test_a_text_column_holds_the_text_itself(tmp_path):
    texts = ["hello", "wörld", "tokens"]
    pq.write_table(pa.table({"text": texts, "id": [1, 2, 3]}), tmp_path / "texts.parquet")
    zoo.tools.batch.run("byte-utf8", [tmp_path / "texts.parquet"], tmp_path / "out", progress=False)
    assert [r["ids"] for r in rows_of(tmp_path / "out")] == [list(t.encode("utf-8")) for t in texts]


def test_an_array_column_reaches_the_family_as_arrays(tmp_path):
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-1, 1, n).astype(np.float32) for n in (40, 48, 400)]
    for i, clip in enumerate(clips):
        np.save(tmp_path / f"clip{i}.npy", clip)
    pq.write_table(
        pa.table({"wave": pa.array([c.tolist() for c in clips], pa.list_(pa.float32()))}), tmp_path / "w.parquet"
    )
    zoo.tools.batch.run(WaveTokens(), [str(tmp_path / "clip*.npy")], tmp_path / "files", progress=False)
    zoo.tools.batch.run(WaveTokens(), [tmp_path / "w.parquet"], tmp_path / "table", progress=False)
    assert tokens_of(rows_of(tmp_path / "table")) == tokens_of(rows_of(tmp_path / "files"))


def test_webdataset_audio_and_image_shards_tokenize_like_their_files(tmp_path):
    shard = write_shard(
        tmp_path / "speech.tar",
        [{"__key__": f"utt{i}", "wav": Path(c).read_bytes(), "json": b"{}"} for i, c in enumerate(CLIPS)],
    )
    zoo.tools.batch.run("s3tokenizer-tiny", CLIPS, tmp_path / "files", progress=False)
    zoo.tools.batch.run("s3tokenizer-tiny", [shard], tmp_path / "shard", progress=False)
    assert tokens_of(rows_of(tmp_path / "shard")) == tokens_of(rows_of(tmp_path / "files"))

    pictures = [grey_png(i) for i in range(3)]
    for i, data in enumerate(pictures):
        (tmp_path / f"pic{i}.png").write_bytes(data)
    images = write_shard(tmp_path / "images.tar", [{"__key__": f"pic{i}", "png": d} for i, d in enumerate(pictures)])
    files = [str(tmp_path / f"pic{i}.png") for i in range(3)]
    model = TinyPNGVQ()
    zoo.tools.batch.run(model, files, tmp_path / "png-files", progress=False)
    zoo.tools.batch.run(model, [images], tmp_path / "png-shard", progress=False)
    assert tokens_of(rows_of(tmp_path / "png-shard")) == tokens_of(rows_of(tmp_path / "png-files"))


def test_a_bad_member_or_a_sample_without_the_key_is_an_error_record_and_the_run_goes_on(tmp_path):
    shard = write_shard(
        tmp_path / "mixed.tar",
        [
            {"__key__": "good", "wav": Path(CLIPS[0]).read_bytes()},
            {"__key__": "broken", "wav": b"RIFF not really a wave file"},
            {"__key__": "nowav", "json": b"{}"},
        ],
    )
    manifest = zoo.tools.batch.run("s3tokenizer-tiny", [shard], tmp_path / "out", progress=False)
    assert manifest["rows"] == 1 and manifest["errors"] == 2
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    # speech files are read when the batch is built, so a broken one fails at "encode"
    assert [(e["source"], e["stage"]) for e in errors] == [
        (f"{shard}#broken.wav", "encode"),
        (f"{shard}#nowav", "load"),
    ]
    assert "holds ['json']" in errors[1]["error"]


def test_the_batch_cli_takes_a_field_for_the_container_column(tmp_path, capsys):
    import argparse

    pq.write_table(pa.table({"body": ["a.txt", "bc.txt"], "title": ["x", "y"]}), tmp_path / "t.parquet")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "bc.txt").write_text("bc")
    parser = argparse.ArgumentParser()
    zoo.tools.batch.add_cli(parser.add_subparsers())
    argv = ["batch", "byte-utf8", str(tmp_path / "t.parquet"), "--field", "body", "--out", str(tmp_path / "o")]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    rows = rows_of(tmp_path / "o")
    assert [r["source"] for r in rows] == [str(tmp_path / "a.txt"), str(tmp_path / "bc.txt")]
    assert [r["ids"] for r in rows] == [[97], [98, 99]] and "2 of 2 inputs" in capsys.readouterr().out

"""zoo.tools.hf_datasets: token columns through ``datasets.Dataset.map(batched=True)``, and `tokenzoo batch`
Parquet output read back with ``datasets.load_dataset("parquet", ...)`` under the documented features."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile

import zoo.tools.batch
from zoo.tools.hf_datasets import BATCH_FEATURES, TOKEN_FEATURES, TokenColumns, token_features

ROOT = Path(__file__).resolve().parent.parent
CLIPS = sorted(str(p) for p in (ROOT / "audio" / "samples").glob("*.wav"))


def batch_rows(name: str, inputs: list[str], out: Path) -> list[dict]:
    zoo.tools.batch.run(name, inputs, out, batch_size=2, progress=False)
    return zoo.tools.batch.read_shards(out).to_pylist()


def write_texts(folder: Path, texts: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return [str(folder / f"doc{i}.txt") for i in range(len(texts))]


# ---- tokenzoo batch output as a dataset ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["bpe-tiny", "hot-mixste-tiny"])
def test_batch_output_loads_with_load_dataset_under_the_documented_features(name, tmp_path):
    if name == "bpe-tiny":
        inputs = write_texts(tmp_path / "docs", ["hello world", "tokens", "more tokens here"])
    else:
        inputs = [str(p) for p in zoo.load(name).sample_inputs()]
    expected = batch_rows(name, inputs, tmp_path / "out")
    files = str(tmp_path / "out" / "*.parquet")
    documented = datasets.load_dataset("parquet", data_files=files, features=BATCH_FEATURES, split="train")
    inferred = datasets.load_dataset("parquet", data_files=files, split="train")
    assert documented.features == BATCH_FEATURES and inferred.features == BATCH_FEATURES
    got = documented.to_list()
    assert [r["source"] for r in got] == inputs and [r["ids"] for r in got] == [r["ids"] for r in expected]
    for a, b in zip(got, expected):
        if b["embeddings"] is not None:
            np.testing.assert_allclose(np.array(a["embeddings"]), np.array(b["embeddings"]), rtol=1e-6)


# ---- Dataset.map ---------------------------------------------------------------------------------------
def test_map_adds_the_token_columns_tokenzoo_batch_writes_for_the_same_texts(tmp_path):
    texts = ["hello world", "", "wörld of tokens"]
    expected = batch_rows("bpe-tiny", write_texts(tmp_path / "docs", texts), tmp_path / "out")
    ds = datasets.Dataset.from_dict({"text": texts, "id": [0, 1, 2]})
    add_tokens = TokenColumns("bpe-tiny", column="text")
    mapped = ds.map(add_tokens, batched=True, batch_size=2, features=add_tokens.output_features(ds.features))
    assert mapped.column_names == ["text", "id", *TOKEN_FEATURES]
    assert {k: mapped.features[k] for k in TOKEN_FEATURES} == dict(TOKEN_FEATURES)
    columns = ("ids", "length", "meta", "model", "revision")
    assert [{k: r[k] for k in columns} for r in mapped] == [{k: r[k] for k in columns} for r in expected]
    assert mapped["error"] == [None, None, None] and mapped["embeddings"] == [None, None, None]


def test_map_reads_undecoded_audio_and_decoded_arrays_like_the_files(tmp_path):
    expected = [r["ids"] for r in batch_rows("s3tokenizer-tiny", CLIPS, tmp_path / "out")]
    # The {bytes, path} rows an Audio(decode=False) column yields (building one with the Audio feature
    # itself needs torchcodec to encode, which tokenzoo does not install).
    undecoded = datasets.Dataset.from_dict(
        {"audio": [{"bytes": Path(c).read_bytes(), "path": Path(c).name} for c in CLIPS]}
    )
    add_tokens = TokenColumns("s3tokenizer-tiny", column="audio", prefix="tok_")
    mapped = undecoded.map(add_tokens, batched=True, batch_size=2)
    assert mapped["tok_ids"] == expected and set(token_features("tok_")) == set(mapped.column_names) - {"audio"}
    waves = [soundfile.read(c, dtype="float32") for c in CLIPS]
    arrays = datasets.Dataset.from_dict({"audio": [{"array": w, "sampling_rate": sr} for w, sr in waves]})
    assert arrays.map(add_tokens, batched=True, batch_size=2)["tok_ids"] == expected


def test_a_bad_row_gets_an_error_and_the_map_goes_on(tmp_path):
    ds = datasets.Dataset.from_dict({"audio": [Path(CLIPS[0]).read_bytes(), b"not audio at all"]})
    mapped = ds.map(TokenColumns("s3tokenizer-tiny", column="audio"), batched=True)
    assert mapped[0]["error"] is None and mapped[0]["length"] > 0
    assert mapped[1]["ids"] is None and mapped[1]["error"].startswith("encode: ")
    assert json.loads(mapped[0]["meta"])["sample_rate"] == 16000


def test_the_readme_datasets_example_runs_as_written(tmp_path, monkeypatch, capsys):
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "TokenColumns" in b]
    monkeypatch.chdir(tmp_path)
    zoo.tools.batch.run("bpe-tiny", write_texts(tmp_path / "texts", ["one text", "two"]), "tokens", progress=False)
    exec(compile(block, "README.md:datasets", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].endswith(" None") and printed.splitlines()[1] == f"True {tmp_path}/texts/doc0.txt"

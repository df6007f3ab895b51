"""🤗 datasets for tokenzoo: token columns through ``Dataset.map``, and ``tokenzoo batch`` output as a dataset.

Adding tokens to a dataset (the function loads the model once; ``map`` calls it batch by batch)::

    import datasets
    from zoo.tools.hf_datasets import TokenColumns

    ds = datasets.load_dataset("parquet", data_files="clips.parquet", split="train")
    ds = ds.cast_column("audio", datasets.Audio(decode=False))     # {bytes, path}: tokenzoo decodes itself
    add_tokens = TokenColumns("s3tokenizer-tiny", column="audio")
    ds = ds.map(add_tokens, batched=True, batch_size=32, features=add_tokens.output_features(ds.features))

It adds ``TOKEN_FEATURES``' columns (``ids``, ``embeddings``, ``length``, ``meta``, ``model``,
``revision`` and ``error``, null for a tokenized row), the values ``tokenzoo batch`` writes for the
same inputs. Pass ``features=add_tokens.output_features(ds.features)``: without it ``datasets`` infers
each column's type from the first batch, and a column that is null there (``embeddings`` of a discrete
model) is typed null. ``prefix`` renames them (``prefix="tok_"`` -> ``tok_ids``...). The input column may hold
paths, bytes, ``{bytes, path}`` structs, decoded ``{array, sampling_rate}`` audio (written to a WAV
file first, so the family resamples it as it resamples files), PIL images or arrays; see
``zoo.tools.ray.Tokenize``, whose per-batch logic this shares.

Reading ``tokenzoo batch`` output (either engine) as a dataset::

    rows = datasets.load_dataset("parquet", data_files="tokens/*.parquet", features=BATCH_FEATURES, split="train")

``BATCH_FEATURES`` documents its columns: ``source`` string, ``index`` int64, ``ids`` list of int64
(null for continuous tokens), ``embeddings`` list of lists of float32 (null for discrete tokens),
``length`` int64, ``meta`` string (JSON), ``model`` string, ``revision`` string.
"""

from __future__ import annotations

import os
from typing import Any

import datasets

from zoo.api import ZooModel
from zoo.tools.ray import Tokenize

# The columns of `tokenzoo batch` rows, as ``datasets`` reads its Parquet files.
BATCH_FEATURES = datasets.Features(
    {
        "source": datasets.Value("string"),
        "index": datasets.Value("int64"),
        "ids": datasets.List(datasets.Value("int64")),
        "embeddings": datasets.List(datasets.List(datasets.Value("float32"))),
        "length": datasets.Value("int64"),
        "meta": datasets.Value("string"),
        "model": datasets.Value("string"),
        "revision": datasets.Value("string"),
    }
)


def token_features(prefix: str = "") -> datasets.Features:
    """The ``datasets.Features`` of the columns ``TokenColumns`` adds (``TOKEN_FEATURES`` for no prefix)."""
    features = {k: v for k, v in BATCH_FEATURES.items() if k not in ("source", "index")}
    features["error"] = datasets.Value("string")
    return datasets.Features({prefix + k: v for k, v in features.items()})


TOKEN_FEATURES = token_features()


class TokenColumns:
    """``Dataset.map(TokenColumns(model, column=...), batched=True)``: token columns for each row.

    Args:
        model: a registered name, ``"hf-hub:org/repo@rev"``, a folder, or a loaded ZooModel.
        column: the input column (paths, bytes, ``{bytes, path}``, ``{array, sampling_rate}``, PIL images
            or arrays).
        prefix: put before each added column's name.
        device, dtype, revision, local_files_only, batch_size, max_batch_units, encode_kwargs: as for
            ``zoo.tools.ray.Tokenize``.
    """

    def __init__(
        self,
        model: str | os.PathLike | ZooModel,
        *,
        column: str,
        prefix: str = "",
        device: str | None = "cpu",
        **options: Any,
    ):
        self.stage = Tokenize(model, column=column, device=device, **options)
        self.column = column
        self.prefix = prefix

    def __call__(self, batch: dict[str, list]):
        """A ``datasets`` batch (dict of lists) -> the token columns (lists; ``map`` adds them to the batch)."""
        values = [_plain(v) for v in batch[self.column]]
        table = self.stage({self.column: values})
        table = table.drop_columns(["source", "index"])
        return {self.prefix + name: table.column(name).to_pylist() for name in table.column_names}

    @property
    def features(self) -> datasets.Features:
        """The features of the added columns (``token_features(prefix)``)."""
        return token_features(self.prefix)

    def output_features(self, features: datasets.Features) -> datasets.Features:
        """``features`` (the dataset's) plus the added columns: pass it as ``map(..., features=...)`` so the
        token columns keep their types even in a batch where all of them are null."""
        return datasets.Features({**features, **self.features})


def _plain(value: Any) -> Any:
    """Decoded ``{array, sampling_rate}`` audio -> WAV bytes (the family resamples files itself)."""
    if isinstance(value, dict) and "array" in value and "sampling_rate" in value:
        import io

        import numpy as np
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]), format="WAV")
        return {"bytes": buffer.getvalue(), "path": value.get("path")}
    return value


__all__ = ["BATCH_FEATURES", "TOKEN_FEATURES", "TokenColumns", "token_features"]

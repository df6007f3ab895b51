"""Official models loaded by name from repos laid out as their publishers lay them out, served by the local Hub.

Each test builds a stand-in of the real release from the parity fixture's upstream weights (the file names,
folders and formats of the release: an ONNX graph exported by torch.onnx.export, a pickled training
checkpoint with ``module.`` prefixes and optimizer state), commits it under the repo and file the card
names, and checks that ``zoo.load(name)`` gives upstream's ids. The stand-in cannot have the real file's
sha256, so the card is first shown to refuse it; then a copy of the card with the stand-in's hash (and the
sizes a tiny release has that its weights cannot tell) loads it. Cards are never edited.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.helpers import parity_params, require_fixture
from tests.release_layouts import (
    RELEASE_FILE,
    export_s3tokenizer_release,
    official_card_copy,
    release_s3tokenizer,
)
from zoo.errors import ChecksumMismatchError
from zoo.registry import card_data


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def conversions(name: str) -> list[Path]:
    from zoo.official import cache_root

    return sorted((cache_root() / "converted" / name).glob("*/conversion.json"))


# ---- S3Tokenizer: ONNX graphs in FunAudioLLM's repos ------------------------------------------------------
@pytest.mark.parametrize("fixture_dir", parity_params("s3tokenizer"))
def test_parity_s3tokenizer_card_loads_a_release_exported_in_upstreams_layout_with_upstreams_ids(
    fixture_dir, hub, tmp_path, monkeypatch
):
    folder = require_fixture(fixture_dir, "s3tokenizer")
    info = json.loads((folder / "config.json").read_text())
    variant, n_head = info["variant"], info["config"]["n_audio_head"]
    io = load_file(str(folder / "io.safetensors"))
    release = release_s3tokenizer(variant, load_file(str(folder / "weights.safetensors")), n_head)
    clips = sorted({k.split(".")[0] for k in io if k.startswith("clip") and k.endswith(".codes")})
    for clip in clips:  # the layout module computes upstream's function, so its export is an honest release
        assert torch.equal(release(io[f"{clip}.mel"][None])[0], io[f"{clip}.codes"]), clip
    name = f"s3tokenizer-{variant}"
    (spec,) = card_data(name)["upstream_files"]
    assert spec["filename"] == RELEASE_FILE[variant]
    graph = export_s3tokenizer_release(release, tmp_path / "release" / spec["filename"])
    hub.commit(spec["repo"], {spec["filename"]: graph.read_bytes(), "README.md": "# CosyVoice"})

    with pytest.raises(ChecksumMismatchError, match=spec["sha256"]):  # the real card wants the real release
        zoo.load(name)
    cards = official_card_copy(name, tmp_path / "cards", [{"sha256": sha256(graph)}], {"n_audio_head": n_head})
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(cards))
    model = zoo.load(name)
    tokens = model.encode(io["batch.wav"], lengths=io["batch.wav_len"])
    assert torch.equal(tokens.lengths, io["batch.codes_len"])
    for i, n in enumerate(tokens.lengths.tolist()):
        assert torch.equal(tokens.ids[i, :n], io[f"clip{i}.codes"]), f"clip {i}"
    assert model.config.variant == variant and len(conversions(name)) == 1

"""Model cards: the YAML fields the zoo relies on, metrics with their protocol, and the README's models table."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cards import (
    card_license,
    card_metrics,
    card_problems,
    make_card,
    models_table,
    read_card_data,
    update_readme,
)
from zoo.errors import ConfigError

METRIC = {"name": "PSNR", "value": 24.1, "type": "psnr", "dataset": "synthetic shapes", "protocol": "256 px, k=16"}


def card_fields(tmp_path: Path, **kwargs) -> dict:
    options = dict(name="m", arch="flextok", modality="image", license="apache-2.0", summary="A test model.")
    path = tmp_path / "README.md"
    path.write_text(str(make_card(**{**options, **kwargs})))
    return read_card_data(path)


def test_a_card_carries_the_zoo_fields_in_its_yaml(tmp_path):
    data = card_fields(
        tmp_path,
        tokens="1-256 ids of 64,000",
        upstream_repo="apple/ml-flextok",
        upstream_revision="abc1234",
        paper="https://arxiv.org/abs/2502.13967",
        weights="trained here for 300 steps on synthetic shapes (seed 0)",
    )
    assert data["library_name"] == "tokenzoo" and data["arch"] == "flextok" and data["modality"] == "image"
    assert data["license"] == "apache-2.0" and data["tokens"] == "1-256 ids of 64,000"
    assert (data["upstream_repo"], data["upstream_revision"]) == ("apple/ml-flextok", "abc1234")
    assert data["paper"] == "https://arxiv.org/abs/2502.13967" and data["weights"].startswith("trained here")
    assert card_problems(data) == []


def test_metrics_round_trip_through_the_model_index_with_their_protocol(tmp_path):
    data = card_fields(tmp_path, metrics=[METRIC])
    assert data["model-index"][0]["name"] == "m"
    assert card_metrics(data) == [METRIC]


def test_a_metric_without_a_protocol_is_refused():
    unprotocolled = {k: v for k, v in METRIC.items() if k != "protocol"}
    with pytest.raises(ConfigError, match=r"metrics\[0\] lacks protocol"):
        make_card(name="m", arch="a", modality="image", license="mit", summary="", metrics=[unprotocolled])


def test_a_custom_license_is_written_as_other_with_its_name_and_link(tmp_path):
    data = card_fields(tmp_path, license="CosyVoice Model License", license_link="https://example.org/LICENSE")
    assert data["license"] == "other" and data["license_name"] == "cosyvoice-model-license"
    assert data["license_link"] == "https://example.org/LICENSE"
    assert card_license(data) == "cosyvoice-model-license"


def test_an_unknown_modality_is_refused():
    with pytest.raises(ConfigError, match="modality 'video'"):
        make_card(name="m", arch="a", modality="video", license="mit", summary="")


def test_card_problems_name_each_missing_required_field():
    assert card_problems({"library_name": "tokenzoo", "license": "other"}) == [
        "no 'arch'",
        "no 'modality'",
        "license is 'other' but license_name does not say which",
    ]


def write_card(root: Path, name: str, weights: bool = False, **kwargs) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    options = dict(name=name, arch="flextok", modality="image", license="apache-2.0", summary="s", tokens="t")
    (folder / "README.md").write_text(str(make_card(**{**options, **kwargs})))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")


def test_the_models_table_has_one_row_per_card_with_its_source(tmp_path):
    write_card(tmp_path, "bundled-tiny", weights=True, tokens="64 ids | 8 bits")
    write_card(tmp_path, "official", hub_repo="org/official", revision="0123456789abcdef0123456789abcdef01234567")
    write_card(tmp_path, "convert-me", modality="audio", license="Custom One", weights_hint="tokenzoo convert ...")
    recipe = dict(converter="s3tokenizer-v1", upstream_files=[{"repo": "org/upstream", "filename": "a.onnx"}])
    write_card(tmp_path, "released-elsewhere", modality="audio", **recipe)
    lines = models_table(tmp_path).splitlines()
    assert lines[0] == "| model | arch | modality | license | tokens | source |"
    assert len(lines) == 6
    bundled, convert, official, released = lines[2:]
    assert "converted on first load from `org/upstream`" in released
    assert bundled.startswith("| [bundled-tiny](hub_cards/bundled-tiny/README.md) | `flextok` | image | apache-2.0 |")
    assert "64 ids \\| 8 bits" in bundled and "bundled" in bundled
    assert "| audio | custom-one |" in convert and "convert the published checkpoint" in convert
    assert "[hf-hub:org/official@0123456](https://huggingface.co/org/official)" in official


def test_update_readme_replaces_only_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- models-table: generated -->\nold table\n<!-- /models-table -->\noutro\n")
    assert update_readme(readme, table="| new |\n") is True
    assert readme.read_text() == "intro\n<!-- models-table: generated -->\n| new |\n<!-- /models-table -->\noutro\n"
    assert update_readme(readme, table="| new |\n") is False


def test_update_readme_check_mode_reports_a_stale_table_without_writing(tmp_path):
    readme = tmp_path / "README.md"
    text = "<!-- models-table -->\nold\n<!-- /models-table -->\n"
    readme.write_text(text)
    assert update_readme(readme, table="| new |\n", check=True) is True
    assert readme.read_text() == text


def test_update_readme_without_markers_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="models-table"):
        update_readme(readme, table="| x |\n")


def _official_cards() -> list[str]:
    from zoo.registry import _card_folders, card_data, list_models

    return [
        n
        for n in list_models()
        if not (_card_folders()[n] / "model.safetensors").is_file()
        and (card_data(n).get("upstream_files") or card_data(n).get("hub_repo"))
    ]


@pytest.mark.parametrize("name", _official_cards())
def test_an_official_card_states_license_size_upstream_files_and_measured_parity(name):
    import re

    from zoo.registry import _card_folders, card_data

    data, text = card_data(name), (_card_folders()[name] / "README.md").read_text()
    assert card_license(data) not in ("", "unknown")
    assert re.search(r"\d[\d.,]* ?[MB]? parameters", text), f"{name}: no size"
    parity = re.search(r"## Parity with upstream\n\n(.+)", text)
    assert parity and ("equal" in parity[1] or "within" in parity[1] or "not measured for plain" in parity[1]), name
    for f in data.get("upstream_files", []):
        assert (f.get("filename") or f["pattern"]) in text
        if f.get("sha256"):
            assert f["sha256"] in text

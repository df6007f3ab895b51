"""zoo.official: an official model's card names upstream files; ``zoo.load(name)`` fetches, verifies, converts
once and caches. Driven through the local Hub server with the real huggingface_hub client, a tiny test arch
and its converter (tests/fakes.py), and cards written to a temporary cards folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import zoo
from tests import fakes
from zoo.errors import ChecksumMismatchError, ConfigError, ModelFileNotFoundError, OffHubWeightsError, OfflineError

REPO = "upstream-org/tiny-release"
FILE = "tiny_release.pt"
IDS = torch.tensor([[1, 2, 3, 15]])
ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_card(cards: Path, name: str, files: list[dict], options: dict | None = None) -> Path:
    data = {
        "library_name": "tokenzoo",
        "arch": fakes.TinyModel.arch,
        "modality": "text",
        "license": "mit",
        "converter": fakes.TinyModel.arch,
        "converter_options": options or {},
        "upstream_files": files,
    }
    folder = cards / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(data, sort_keys=False)}---\n\n# {name}\n")
    return folder


@pytest.fixture
def official(hub, tmp_path, monkeypatch, tiny_arch):
    """A tiny upstream release on the local Hub and the card of the official model made from it."""
    from zoo import registry

    monkeypatch.setitem(registry.CONVERTERS, fakes.TinyModel.arch, fakes.CONVERTER_TARGET)
    cards = tmp_path / "cards"
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(cards))
    log = tmp_path / "conversions.log"
    monkeypatch.setenv("TINY_CONVERT_LOG", str(log))
    source = fakes.seeded(11)
    release = tmp_path / "upstream" / FILE
    release.parent.mkdir()
    fakes.save_upstream_release(source, release)
    hub.commit(REPO, {FILE: release.read_bytes(), "README.md": "# upstream"})
    spec = {"repo": REPO, "filename": FILE, "revision": "main", "sha256": sha256(release)}
    write_card(cards, "tiny-official", [spec])

    class Official:
        pass

    o = Official()
    o.hub, o.cards, o.log, o.source, o.release, o.spec, o.tmp = hub, cards, log, source, release, spec, tmp_path
    o.conversions = lambda: len(log.read_text().splitlines()) if log.is_file() else 0
    return o


def entries(name: str = "tiny-official") -> list[Path]:
    from zoo.official import cache_root

    folder = cache_root() / "converted" / name
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []


def same_ids(model, source) -> bool:
    return torch.equal(model.encode(IDS).embeddings, source.encode(IDS).embeddings)


def subprocess_env(official, hub_env, **extra) -> dict[str, str]:
    env = {**hub_env, "TOKENZOO_CARDS_DIR": str(official.cards), "TINY_CONVERT_LOG": str(official.log), **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


LOAD_IN_A_SUBPROCESS = textwrap.dedent(
    f"""
    import sys, torch
    from tests import fakes
    from zoo import registry
    registry.ARCHITECTURES[fakes.TinyModel.arch] = fakes.ARCHS[fakes.TinyModel.arch]
    registry.CONVERTERS[fakes.TinyModel.arch] = fakes.CONVERTER_TARGET
    import zoo
    model = zoo.load(sys.argv[1])
    print(model.encode(torch.tensor({IDS.tolist()})).embeddings.sum().item())
    """
)


def run_load(official, hub_env, name="tiny-official", **extra) -> subprocess.CompletedProcess:
    env = subprocess_env(official, hub_env, **extra)
    return subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_SUBPROCESS, name], env=env, capture_output=True, text=True, timeout=300
    )


# ---- one call ------------------------------------------------------------------------------------
def test_an_official_card_loads_in_one_call_fetching_verifying_and_converting(official):
    model = zoo.load("tiny-official")
    assert same_ids(model, official.source)
    (entry,) = entries()
    manifest = json.loads((entry / "conversion.json").read_text())
    assert manifest["upstream_files"][0]["sha256"] == official.spec["sha256"]
    assert manifest["upstream_files"][0]["commit"] == official.hub.head(REPO)
    assert manifest["converter_version"] == fakes.CONVERTER_VERSION
    assert (entry / "README.md").read_text() == (official.cards / "tiny-official" / "README.md").read_text()


def test_the_second_load_neither_converts_nor_downloads(official):
    zoo.load("tiny-official")
    requests = len(official.hub.requests)
    again = zoo.load("tiny-official")
    assert official.conversions() == 1 and len(official.hub.requests) == requests
    assert same_ids(again, official.source)


def test_a_file_whose_sha256_differs_from_the_card_is_refused_naming_file_expected_and_actual(official):
    other = official.tmp / "other.pt"
    fakes.save_upstream_release(fakes.seeded(12), other)
    official.hub.commit(REPO, {FILE: other.read_bytes()})
    with pytest.raises(ChecksumMismatchError) as info:
        zoo.load("tiny-official")
    message = str(info.value)
    assert FILE in message and official.spec["sha256"] in message and sha256(other) in message
    assert official.conversions() == 0 and entries() == []


def test_a_new_converter_version_converts_again_into_a_new_entry(official, monkeypatch):
    zoo.load("tiny-official")
    monkeypatch.setattr(fakes, "CONVERTER_VERSION", fakes.CONVERTER_VERSION + 1)
    zoo.load("tiny-official")
    assert official.conversions() == 2 and len(entries()) == 2


def test_revision_is_refused_for_a_card_that_pins_its_upstream_files(official):
    with pytest.raises(ConfigError, match="pins the upstream files"):
        zoo.load("tiny-official", revision="main")


# ---- offline, concurrency, interruption ------------------------------------------------------------
def test_hf_hub_offline_loads_the_cached_conversion_in_a_fresh_process(official, hub_env):
    expected = official.source.encode(IDS).embeddings.sum().item()
    zoo.load("tiny-official")
    official.hub.reset()  # nothing left to serve: only the caches can answer
    done = run_load(official, hub_env, HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) == pytest.approx(expected)
    assert official.conversions() == 1


def test_offline_without_a_conversion_or_a_download_raises_offline_error_naming_the_file(official, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match=FILE):
        zoo.load("tiny-official")


def test_two_processes_loading_at_once_convert_once_and_leave_one_intact_entry(official, hub_env):
    env = subprocess_env(official, hub_env, TINY_CONVERT_SLEEP="2")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD_IN_A_SUBPROCESS, "tiny-official"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert official.conversions() == 1
    (entry,) = entries()
    assert sorted(p.name for p in entry.iterdir()) == [
        "README.md",
        "config.json",
        "conversion.json",
        "model.safetensors",
    ]
    assert not list(entry.parent.glob(".partial-*"))
    assert same_ids(zoo.load(entry), official.source)


def test_an_interrupted_conversion_leaves_nothing_a_later_load_takes_for_finished(official, hub_env):
    crashed = run_load(official, hub_env, TINY_CONVERT_CRASH="1")
    assert crashed.returncode != 0
    from zoo.official import cache_root

    (partial,) = (cache_root() / "converted" / "tiny-official").glob(".partial-*")
    assert entries() == [] and (partial / "model.safetensors").is_file()  # half written, and not an entry
    model = zoo.load("tiny-official")
    assert same_ids(model, official.source) and official.conversions() == 2
    (entry,) = entries()
    assert not list(entry.parent.glob(".partial-*"))


# ---- files picked by pattern, several files, files off the Hub ------------------------------------------
def test_a_pattern_picks_one_file_from_the_repo_listing_and_pins_it_on_first_download(official):
    from zoo.official import read_pins

    other = official.tmp / "pre.pt"
    fakes.save_upstream_release(fakes.seeded(13), other)
    official.hub.commit(REPO, {"Tiny-Small.pt": official.release.read_bytes(), "Pretrained/Tiny-Small.pt": other})
    spec = {"repo": REPO, "pattern": "*small*", "revision": "main"}
    write_card(official.cards, "tiny-by-pattern", [spec])
    pinned_commit = official.hub.head(REPO)
    assert same_ids(zoo.load("tiny-by-pattern"), official.source)
    (pin,) = read_pins("tiny-by-pattern").values()
    assert pin == {
        "filename": "Tiny-Small.pt",
        "commit": pinned_commit,
        "sha256": sha256(official.release),
        "repo": REPO,
    }
    official.hub.commit(REPO, {"Tiny-Small.pt": other.read_bytes()})  # upstream replaces the file on main
    for entry in entries("tiny-by-pattern"):
        (entry / "conversion.json").unlink()  # force a new download: it must come from the pinned commit
    assert same_ids(zoo.load("tiny-by-pattern"), official.source)


@pytest.mark.parametrize("pattern, count", [("*large*", 0), ("tiny*", 2)])
def test_a_pattern_matching_no_file_or_several_lists_the_candidates(official, pattern, count):
    official.hub.commit(REPO, {"tiny_other.pt": official.release.read_bytes()})
    write_card(official.cards, "tiny-by-pattern", [{"repo": REPO, "pattern": pattern}])
    with pytest.raises(ModelFileNotFoundError, match=rf"matched {count} of: tiny_other.pt, tiny_release.pt"):
        zoo.load("tiny-by-pattern")


def test_a_card_naming_several_files_feeds_each_to_its_converter_option(official):
    shift = official.tmp / "shift.pt"
    torch.save(torch.full((official.source.config.dim,), 0.5), shift)
    official.hub.commit("other-org/extras", {"bias_shift.pt": shift.read_bytes()})
    second = {"repo": "other-org/extras", "filename": "bias_shift.pt", "sha256": sha256(shift), "option": "bias_shift"}
    write_card(official.cards, "tiny-two-files", [official.spec, second])
    model = zoo.load("tiny-two-files")
    torch.testing.assert_close(model.proj.bias, official.source.proj.bias + 0.5)
    manifest = json.loads((entries("tiny-two-files")[0] / "conversion.json").read_text())
    assert [f["option"] for f in manifest["upstream_files"]] == [None, "bias_shift"]


def test_an_off_hub_file_raises_with_the_exact_command_which_then_converts_into_the_cache(official, capsys):
    from zoo.cli import main

    url = "https://drive.example.com/folder/tiny"
    write_card(official.cards, "tiny-off-hub", [{"url": url, "filename": FILE, "sha256": official.spec["sha256"]}])
    with pytest.raises(OffHubWeightsError) as info:
        zoo.load("tiny-off-hub")
    command = info.value.command
    assert url in str(info.value) and command in str(info.value)
    assert command == f"tokenzoo convert tiny-off-hub {FILE}"
    assert main(command.split()[1:-1] + [str(official.release)]) == 0
    assert same_ids(zoo.load("tiny-off-hub"), official.source)


def test_a_card_with_its_checkpoint_on_the_hub_and_a_second_file_off_it_converts_by_the_printed_command(
    official, capsys
):
    from zoo.cli import main

    shift = official.tmp / "bias_shift.pt"
    torch.save(torch.full((official.source.config.dim,), 0.25), shift)
    second = {"url": "https://elsewhere.example/weights", "filename": "bias_shift.pt", "option": "bias_shift"}
    write_card(official.cards, "tiny-split", [official.spec, second])
    with pytest.raises(OffHubWeightsError) as info:
        zoo.load("tiny-split")
    assert info.value.command == "tokenzoo convert tiny-split --file bias_shift=bias_shift.pt"
    argv = info.value.command.split()[1:]
    assert main([*argv[:-1], f"bias_shift={shift}"]) == 0  # the file's path where the user saved it
    model = zoo.load("tiny-split")
    torch.testing.assert_close(model.proj.bias, official.source.proj.bias + 0.25)


def test_converting_a_wrong_file_for_an_off_hub_card_names_the_hash_mismatch(official, capsys):
    from zoo.cli import main

    write_card(official.cards, "tiny-off-hub", [{"url": "https://x.example", "filename": FILE, "sha256": "0" * 64}])
    assert main(["convert", "tiny-off-hub", str(official.release)]) == 2
    assert "0" * 64 in capsys.readouterr().err


# ---- publishing -------------------------------------------------------------------------------------
def test_publish_pushes_a_folder_that_a_clean_cache_loads_with_the_same_ids_and_no_conversion(
    official, capsys, monkeypatch, tmp_path
):
    from huggingface_hub import constants

    from zoo.cards import read_card_data
    from zoo.cli import main

    assert main(["publish", "tiny-official", "--repo", "mirror-org/tiny-official"]) == 0
    files = official.hub.files("mirror-org/tiny-official")
    assert {"README.md", "config.json", "model.safetensors", "conversion.json"} <= set(files)
    (tmp_path / "card.md").write_bytes(files["README.md"])
    card = read_card_data(tmp_path / "card.md")
    assert card["license"] == "mit" and card["converter_version"] == fakes.CONVERTER_VERSION
    assert card["converted_from"][0]["sha256"] == official.spec["sha256"] and "upstream_files" not in card
    assert "How this repo was made" in files["README.md"].decode()
    monkeypatch.setenv("TOKENZOO_CACHE", str(tmp_path / "clean-zoo-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "clean-hf-cache"))
    mirrored = zoo.load("hf-hub:mirror-org/tiny-official")
    assert same_ids(mirrored, official.source) and official.conversions() == 1
    assert not official.hub.downloads(FILE)[1:]  # the upstream file was fetched once, for the conversion


# ---- malformed recipes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "files, options, message",
    [
        ([{"repo": REPO}], None, "exactly one of filename and pattern"),
        ([{"repo": REPO, "filename": FILE, "url": "https://x"}], None, "exactly one of repo"),
        ([{"repo": REPO, "filename": FILE, "sha256": "abc"}], None, "64 lowercase hex"),
        ([{"repo": REPO, "filename": FILE, "mirror": "x"}], None, "unknown field"),
        ([{"repo": REPO, "filename": FILE, "option": "vit"}], None, "converter's src"),
        ([{"repo": REPO, "filename": FILE}, {"repo": REPO, "filename": "b", "option": "dim"}], {"dim": 4}, "option"),
    ],
)
def test_a_malformed_recipe_is_a_config_error_naming_the_problem(official, files, options, message):
    write_card(official.cards, "tiny-bad", files, options)
    with pytest.raises(ConfigError, match=message):
        zoo.load("tiny-bad")

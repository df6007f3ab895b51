"""Loading from and pushing to the Hub, through the real huggingface_hub client and tests/hubserver.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import zoo
from tests.fakes import TinyConfig, seeded
from tests.hubserver import git_blob_sha1
from zoo.errors import (
    CheckpointMismatchError,
    CorruptFileError,
    ModelFileNotFoundError,
    OfflineError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UnsafeFormatError,
)

ROOT = Path(__file__).resolve().parent.parent
REPO = "org/tiny"


def publish(hub, tmp_path, model, repo=REPO, name="v") -> str:
    """Save ``model`` as a model folder and commit it to the local Hub; returns the commit sha."""
    return hub.upload_folder(repo, model.save_pretrained(tmp_path / name))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def cache_entries(cache: Path) -> list[str]:
    """Every file and link in a Hub cache, relative to it (locks left out: they hold no content)."""
    return sorted(
        p.relative_to(cache).as_posix()
        for p in cache.rglob("*")
        if (p.is_file() or p.is_symlink()) and ".locks" not in p.parts
    )


def assert_only_config_in_cache(cache: Path, hub, repo: str = REPO) -> None:
    """After a refused weights download the cache holds config.json (fetched first, intact) and nothing else:
    no weights blob, no snapshot entry for them, no partial or temporary file."""
    entries = cache_entries(cache)
    config_blob = git_blob_sha1(hub.files(repo)["config.json"])
    assert [e for e in entries if "/blobs/" in e] == [f"models--{repo.replace('/', '--')}/blobs/{config_blob}"]
    assert [e.rsplit("/", 1)[-1] for e in entries if "/snapshots/" in e] == ["config.json"]
    assert not [e for e in entries if "incomplete" in e or e.endswith(".tmp")], entries


# ---- download then load -------------------------------------------------------------------------
def test_a_model_pushed_by_the_hub_server_loads_with_identical_weights(hub, tmp_path, tiny_arch):
    model = seeded(0)
    publish(hub, tmp_path, model)
    loaded = zoo.load(f"hf-hub:{REPO}")
    assert type(loaded).arch == tiny_arch
    assert same_weights(loaded, model)
    assert not loaded.training


def test_a_hub_load_brings_the_card_into_the_snapshot(hub, tmp_path, hf_cache, tiny_arch):
    sha = publish(hub, tmp_path, seeded(0))
    zoo.load(f"hf-hub:{REPO}")
    snapshot = hf_cache / "models--org--tiny" / "snapshots" / sha
    assert {p.name for p in snapshot.iterdir()} == {"README.md", "config.json", "model.safetensors"}


def test_the_byte_tokenizer_loads_from_the_hub_with_its_empty_weights_file(hub, tmp_path):
    byte_model = zoo.load("byte-utf8")
    hub.upload_folder("org/bytes", byte_model.save_pretrained(tmp_path / "bytes"))
    loaded = zoo.load("hf-hub:org/bytes")
    assert loaded.decode(loaded.encode(["grüße"])) == ["grüße"]


def test_load_honours_device_and_dtype(hub, tmp_path, tiny_arch):
    publish(hub, tmp_path, seeded(0))
    loaded = zoo.load(f"hf-hub:{REPO}", device="cpu", dtype=torch.float64)
    assert loaded.dtype == torch.float64 and loaded.device == torch.device("cpu")


# ---- revisions ----------------------------------------------------------------------------------
def test_a_sha_pinned_load_gets_the_old_weights_after_a_new_commit(hub, tmp_path, tiny_arch):
    old, new = seeded(0), seeded(1)
    first = publish(hub, tmp_path, old, name="old")
    publish(hub, tmp_path, new, name="new")
    assert same_weights(zoo.load(f"hf-hub:{REPO}@{first}"), old)
    assert same_weights(zoo.load(f"hf-hub:{REPO}"), new)


def test_the_revision_argument_pins_like_the_at_suffix(hub, tmp_path, tiny_arch):
    old = seeded(0)
    first = publish(hub, tmp_path, old, name="old")
    publish(hub, tmp_path, seeded(1), name="new")
    assert same_weights(zoo.load(f"hf-hub:{REPO}", revision=first), old)


def test_a_tag_pins_the_weights_it_was_set_on(hub, tmp_path, tiny_arch):
    old = seeded(0)
    publish(hub, tmp_path, old, name="old")
    hub.tag(REPO, "v1.0")
    publish(hub, tmp_path, seeded(1), name="new")
    assert same_weights(zoo.load(f"hf-hub:{REPO}@v1.0"), old)


def test_a_load_after_a_new_commit_on_main_downloads_the_new_weights(hub, tmp_path, tiny_arch):
    publish(hub, tmp_path, seeded(0), name="old")
    zoo.load(f"hf-hub:{REPO}")
    new = seeded(1)
    publish(hub, tmp_path, new, name="new")
    assert same_weights(zoo.load(f"hf-hub:{REPO}"), new)


def test_a_hub_load_knows_the_commit_sha_its_revision_resolved_to(hub, tmp_path, tiny_arch):
    first = publish(hub, tmp_path, seeded(0), name="old")
    hub.tag(REPO, "v1.0")
    head = publish(hub, tmp_path, seeded(1), name="new")
    for spec, sha in ((f"hf-hub:{REPO}", head), (f"hf-hub:{REPO}@v1.0", first), (f"hf-hub:{REPO}@{first}", first)):
        loaded = zoo.load(spec)
        assert (loaded.name, loaded.source, loaded.revision) == (spec, f"hf-hub:{REPO}", sha)


def test_batch_rows_record_the_commit_sha_not_the_branch(hub, tmp_path):
    import zoo.tools.batch

    sha = hub.upload_folder("org/bytes", zoo.load("byte-utf8").save_pretrained(tmp_path / "bytes"))
    (tmp_path / "a.txt").write_text("hello")
    manifest = zoo.tools.batch.run("hf-hub:org/bytes", [str(tmp_path / "a.txt")], tmp_path / "out", progress=False)
    (row,) = zoo.tools.batch.read_shards(tmp_path / "out").to_pylist()
    assert manifest["revision"] == row["revision"] == sha and row["model"] == "hf-hub:org/bytes"


def test_a_fine_tuned_card_records_the_commit_sha_of_its_base(hub, tmp_path, fakes):
    import zoo.tools.finetune
    from zoo.cards import read_card_data

    torch.manual_seed(0)
    sha = hub.upload_folder("org/vq", fakes.TinyImageVQ().save_pretrained(tmp_path / "vq"))
    data = fakes.make_images(tmp_path / "images", 2)
    zoo.tools.finetune.finetune("hf-hub:org/vq", data, tmp_path / "run", steps=1, batch_size=2, progress=False)
    card = read_card_data(tmp_path / "run" / "model" / "README.md")
    assert card["base_model"] == "hf-hub:org/vq" and card["base_model_revision"] == sha


def test_a_second_load_of_a_pinned_commit_makes_no_request(hub, tmp_path, tiny_arch):
    sha = publish(hub, tmp_path, seeded(0))
    zoo.load(f"hf-hub:{REPO}@{sha}")
    hub.requests.clear()
    zoo.load(f"hf-hub:{REPO}@{sha}")
    assert hub.requests == []


def test_a_registered_card_naming_a_hub_repo_loads_its_pinned_revision(hub, tmp_path, monkeypatch, tiny_arch):
    from zoo.cards import make_card

    official = seeded(0)
    pinned = publish(hub, tmp_path, official, repo="org/official", name="official")
    publish(hub, tmp_path, seeded(1), repo="org/official", name="later")
    card_folder = tmp_path / "cards" / "official-tiny"
    card_folder.mkdir(parents=True)
    card = make_card(
        name="official-tiny", arch=tiny_arch, modality="text", license="mit", summary="s",
        hub_repo="org/official", revision=pinned,
    )  # fmt: skip
    (card_folder / "README.md").write_text(str(card))
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(tmp_path / "cards"))
    assert same_weights(zoo.load("official-tiny"), official)


# ---- offline ------------------------------------------------------------------------------------
def test_a_cached_model_reloads_with_hf_hub_offline_in_a_fresh_process(hub, tmp_path, hub_env, tiny_arch):
    model = seeded(0)
    publish(hub, tmp_path, model)
    zoo.load(f"hf-hub:{REPO}")
    expected = tmp_path / "expected.pt"
    torch.save(model.state_dict(), expected)
    script = textwrap.dedent(
        f"""
        import torch, zoo
        from tests.fakes import ARCHS, TinyModel
        zoo.register_arch(TinyModel.arch, ARCHS[TinyModel.arch])
        loaded = zoo.load("hf-hub:{REPO}")
        expected = torch.load({str(expected)!r}, weights_only=True)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
        print("loaded offline")
        """
    )
    hub.requests.clear()
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**hub_env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "loaded offline" in run.stdout
    assert hub.requests == []  # nothing reached the server


def test_offline_load_of_an_uncached_repo_raises_offline_error_naming_repo_and_file(hub, tmp_path, monkeypatch):
    hub.commit(REPO, {"config.json": b"{}"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        zoo.load(f"hf-hub:{REPO}")
    message = str(info.value)
    assert "org/tiny" in message and "config.json" in message and "HF_HUB_OFFLINE" in message
    assert hub.requests == []


def test_local_files_only_raises_offline_error_when_not_cached(hub):
    hub.commit(REPO, {"config.json": b"{}"})
    with pytest.raises(OfflineError, match="config.json"):
        zoo.load(f"hf-hub:{REPO}", local_files_only=True)


@pytest.mark.slow  # the client retries a refused connection with backoff for ~20 s before giving up
def test_an_unreachable_hub_with_nothing_cached_raises_offline_error(hub, monkeypatch):
    from huggingface_hub import constants

    dead = "http://127.0.0.1:9"  # the discard port: nothing listens
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(OfflineError, match="could not be used"):
        zoo.load(f"hf-hub:{REPO}")


# ---- push ---------------------------------------------------------------------------------------
def test_push_to_hub_then_load_gives_identical_tensors(hub, tiny_arch):
    model = seeded(3, TinyConfig(vocab_size=32, dim=8))
    sha = model.push_to_hub("org/pushed")
    assert hub.head("org/pushed") == sha
    loaded = zoo.load("hf-hub:org/pushed")
    assert loaded.config == model.config
    assert same_weights(loaded, model)


def test_push_to_hub_sends_weights_through_lfs_and_a_card_with_the_zoo_fields(hub, tiny_arch):
    sha = seeded(0).push_to_hub("org/pushed")
    files = hub.repos["org/pushed"].commits[sha].files
    assert set(files) == {"README.md", "config.json", "model.safetensors"}
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    card = files["README.md"].data.decode()
    assert "library_name: tokenzoo" in card and f"arch: {tiny_arch}" in card


def test_push_to_a_branch_leaves_main_alone(hub, tiny_arch):
    main = seeded(0)
    main.push_to_hub("org/pushed")
    dev = seeded(1)
    dev.push_to_hub("org/pushed", revision="dev")
    assert same_weights(zoo.load("hf-hub:org/pushed"), main)
    assert same_weights(zoo.load("hf-hub:org/pushed@dev"), dev)


def test_pushing_unchanged_weights_returns_the_current_head(hub, tiny_arch):
    model = seeded(0)
    first = model.push_to_hub("org/pushed")
    assert model.push_to_hub("org/pushed") == first


# ---- typed errors that name what is missing -----------------------------------------------------
def test_an_unknown_repo_raises_repo_not_found_naming_it(hub):
    with pytest.raises(RepoNotFoundError, match="org/nothing-here"):
        zoo.load("hf-hub:org/nothing-here")


def test_a_missing_weights_file_raises_naming_file_repo_and_revision(hub, tmp_path, tiny_arch):
    hub.commit(REPO, {"config.json": json.dumps({"arch": tiny_arch, "vocab_size": 16, "dim": 4})})
    with pytest.raises(ModelFileNotFoundError) as info:
        zoo.load(f"hf-hub:{REPO}")
    assert str(info.value).startswith("model.safetensors not found in hf-hub:org/tiny@main")
    assert (info.value.file, info.value.revision) == ("model.safetensors", "main")


def test_a_missing_config_raises_naming_the_file(hub):
    hub.commit(REPO, {"README.md": b"# no model here\n"})
    with pytest.raises(ModelFileNotFoundError, match="config.json not found in hf-hub:org/tiny@main"):
        zoo.load(f"hf-hub:{REPO}")


def test_a_bad_revision_raises_revision_not_found_naming_revision_and_repo(hub, tmp_path, tiny_arch):
    publish(hub, tmp_path, seeded(0))
    with pytest.raises(RevisionNotFoundError) as info:
        zoo.load(f"hf-hub:{REPO}@no-such-branch")
    assert "'no-such-branch'" in str(info.value) and "'org/tiny'" in str(info.value)
    assert info.value.revision == "no-such-branch"


# ---- damaged downloads --------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_a_damaged_weight_download_is_refused_and_leaves_nothing_in_the_cache(
    hub, tmp_path, hf_cache, tiny_arch, fault
):
    publish(hub, tmp_path, seeded(0))
    hub.set_fault(REPO, "model.safetensors", fault)
    with pytest.raises(CorruptFileError) as info:
        zoo.load(f"hf-hub:{REPO}")
    assert "model.safetensors" in str(info.value) and "hf-hub:org/tiny@main" in str(info.value)
    assert_only_config_in_cache(hf_cache, hub)


def test_a_corrupted_download_is_named_by_its_hash_mismatch(hub, tmp_path, tiny_arch):
    publish(hub, tmp_path, seeded(0))
    hub.set_fault(REPO, "model.safetensors", "corrupt")
    with pytest.raises(CorruptFileError, match="sha256"):
        zoo.load(f"hf-hub:{REPO}")


def test_a_connection_that_drops_mid_file_is_refused_and_leaves_nothing_in_the_cache(
    hub, tmp_path, hf_cache, tiny_arch
):
    publish(hub, tmp_path, seeded(0))
    hub.set_fault(REPO, "model.safetensors", "drop")  # the client retries for ~5 s before it gives up
    with pytest.raises(CorruptFileError, match="cut short"):
        zoo.load(f"hf-hub:{REPO}")
    assert_only_config_in_cache(hf_cache, hub)


def test_a_load_after_a_corrupted_download_fetches_the_file_again(hub, tmp_path, tiny_arch):
    model = seeded(0)
    publish(hub, tmp_path, model)
    hub.set_fault(REPO, "model.safetensors", "corrupt")
    with pytest.raises(CorruptFileError):
        zoo.load(f"hf-hub:{REPO}")
    hub.set_fault(REPO, "model.safetensors", None)
    assert same_weights(zoo.load(f"hf-hub:{REPO}"), model)


def test_a_cached_weight_file_damaged_on_disk_is_refused_and_evicted(hub, tmp_path, hf_cache, tiny_arch):
    sha = publish(hub, tmp_path, seeded(0))
    zoo.load(f"hf-hub:{REPO}@{sha}")
    cached = hf_cache / "models--org--tiny" / "snapshots" / sha / "model.safetensors"
    blob = cached.resolve()
    blob.write_bytes(blob.read_bytes()[:-10])
    with pytest.raises(CorruptFileError, match="truncated"):
        zoo.load(f"hf-hub:{REPO}@{sha}")
    assert not cached.exists() and not blob.exists()


# ---- pickles ------------------------------------------------------------------------------------
def torch_pickle_bytes(model) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def test_a_hub_repo_with_only_a_pickle_checkpoint_is_refused_without_downloading_it(hub, tiny_arch):
    config = json.dumps({"arch": tiny_arch, "vocab_size": 16, "dim": 4})
    hub.commit(REPO, {"config.json": config, "pytorch_model.bin": torch_pickle_bytes(seeded(0))})
    with pytest.raises(UnsafeFormatError, match="pytorch_model.bin"):
        zoo.load(f"hf-hub:{REPO}")
    assert not hub.downloads("pytorch_model.bin")


def test_a_folder_with_only_a_pickle_checkpoint_is_refused(tmp_path, tiny_arch):
    folder = seeded(0).save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "model.pt").write_bytes(torch_pickle_bytes(seeded(0)))
    with pytest.raises(UnsafeFormatError, match="model.pt"):
        zoo.load(folder)


def test_a_pickle_renamed_to_model_safetensors_is_refused(tmp_path, tiny_arch):
    folder = seeded(0).save_pretrained(tmp_path / "m")
    payload = torch_pickle_bytes(seeded(0))
    assert zipfile.is_zipfile(io.BytesIO(payload))  # torch.save writes a zip of pickles
    (folder / "model.safetensors").write_bytes(payload)
    with pytest.raises(UnsafeFormatError, match="model.safetensors"):
        zoo.load(folder)


# ---- strict loads -------------------------------------------------------------------------------
def write_weights(folder: Path, state: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))


def test_strict_load_lists_missing_unexpected_and_mis_shaped_keys(tmp_path, tiny_arch):
    model = seeded(0)
    folder = model.save_pretrained(tmp_path / "m")
    state = dict(model.state_dict())
    del state["proj.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["table.weight"] = torch.zeros(3, 4)
    write_weights(folder, state)
    with pytest.raises(CheckpointMismatchError) as info:
        zoo.load(folder)
    err = info.value
    assert err.missing == ["proj.bias"] and err.unexpected == ["extra.weight"]
    assert err.mismatched == ["table.weight: checkpoint (3, 4) vs model (16, 4)"]
    for key in ("proj.bias", "extra.weight", "table.weight"):
        assert key in str(err)


def test_strict_load_from_the_hub_names_the_repo_and_revision(hub, tmp_path, tiny_arch):
    model = seeded(0)
    folder = model.save_pretrained(tmp_path / "m")
    write_weights(folder, {k: v for k, v in model.state_dict().items() if k != "proj.weight"})
    hub.upload_folder(REPO, folder)
    with pytest.raises(CheckpointMismatchError, match=r"hf-hub:org/tiny@main[\s\S]*proj\.weight"):
        zoo.load(f"hf-hub:{REPO}")


def test_a_strict_load_gives_parameters_their_own_aligned_memory(tmp_path):
    # safetensors hands out views at the header's offsets; assigned as they are, vectorised kernels take
    # unaligned paths that sum in another order, and the loaded model's outputs move in the last bits.
    from safetensors.torch import save_file

    from zoo.hub import CPU_ALIGNMENT, load_state_dict_strict, read_safetensors

    model = torch.nn.Linear(37, 5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    state = read_safetensors(tmp_path / "w.safetensors")
    loaded = torch.nn.Linear(37, 5, device="meta")
    load_state_dict_strict(loaded, state, "w.safetensors")
    assert all(p.data_ptr() % CPU_ALIGNMENT == 0 for p in loaded.parameters())
    assert torch.equal(loaded.weight, model.weight) and torch.equal(loaded.bias, model.bias)

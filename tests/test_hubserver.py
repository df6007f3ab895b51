"""The local Hub server speaks the protocol the real huggingface_hub client expects (see tests/hubserver.py)."""

from __future__ import annotations

import hashlib
import os

import httpx2
import pytest
from huggingface_hub import HfApi, errors, hf_hub_download, snapshot_download

from tests.hubserver import git_blob_sha1, resolve_url, serve

WEIGHTS = os.urandom(4096)


def test_a_downloaded_file_has_the_committed_bytes(hub):
    hub.commit("org/repo", {"config.json": b"{}", "model.safetensors": WEIGHTS})
    path = hf_hub_download("org/repo", "model.safetensors")
    assert open(path, "rb").read() == WEIGHTS


def test_cache_blobs_are_named_by_sha256_for_lfs_files_and_git_sha1_for_regular_files(hub):
    hub.commit("org/repo", {"config.json": b"{}", "model.safetensors": WEIGHTS})
    weights = hf_hub_download("org/repo", "model.safetensors")
    config = hf_hub_download("org/repo", "config.json")
    assert os.path.basename(os.path.realpath(weights)) == hashlib.sha256(WEIGHTS).hexdigest()
    assert os.path.basename(os.path.realpath(config)) == git_blob_sha1(b"{}")


def test_resolve_headers_carry_commit_etag_and_linked_size_for_lfs_files(hub):
    sha = hub.commit("org/repo", {"model.safetensors": WEIGHTS})
    response = httpx2.head(resolve_url(hub, "org/repo", "model.safetensors"))
    assert response.status_code == 200
    assert response.headers["X-Repo-Commit"] == sha
    assert response.headers["ETag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert response.headers["X-Linked-Size"] == response.headers["Content-Length"] == str(len(WEIGHTS))
    assert "X-Xet-Hash" not in response.headers


def test_a_range_request_gets_206_with_the_requested_bytes(hub):
    hub.commit("org/repo", {"model.safetensors": WEIGHTS})
    response = httpx2.get(resolve_url(hub, "org/repo", "model.safetensors"), headers={"Range": "bytes=100-"})
    assert response.status_code == 206
    assert response.content == WEIGHTS[100:]
    assert response.headers["Content-Range"] == f"bytes 100-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"


def test_a_branch_name_an_old_commit_and_a_tag_each_resolve_to_their_own_content(hub):
    first = hub.commit("org/repo", {"a.txt": b"one"})
    hub.tag("org/repo", "v1")
    hub.commit("org/repo", {"a.txt": b"two"})
    assert open(hf_hub_download("org/repo", "a.txt"), "rb").read() == b"two"
    assert open(hf_hub_download("org/repo", "a.txt", revision=first), "rb").read() == b"one"
    assert open(hf_hub_download("org/repo", "a.txt", revision="v1"), "rb").read() == b"one"


def test_snapshot_download_lists_nested_files_through_the_tree_endpoint(hub):
    hub.commit("org/repo", {"config.json": b"{}", "sub/dir/f.txt": b"hi"})
    folder = snapshot_download("org/repo")
    assert open(os.path.join(folder, "sub", "dir", "f.txt"), "rb").read() == b"hi"
    assert any("/tree/" in path for _, path in hub.requests)


def test_tree_listing_without_recursive_shows_only_the_top_level(hub):
    hub.commit("org/repo", {"config.json": b"{}", "sub/dir/f.txt": b"hi"})
    top = {entry.path for entry in HfApi().list_repo_tree("org/repo")}
    everything = {entry.path for entry in HfApi().list_repo_tree("org/repo", recursive=True)}
    assert top == {"config.json", "sub"}
    assert everything == {"config.json", "sub", "sub/dir", "sub/dir/f.txt"}


@pytest.mark.parametrize(
    ("repo", "filename", "revision", "expected"),
    [
        ("org/missing", "config.json", None, errors.RepositoryNotFoundError),
        ("org/repo", "missing.json", None, errors.RemoteEntryNotFoundError),
        ("org/repo", "config.json", "no-such-branch", errors.RevisionNotFoundError),
    ],
    ids=["repo", "file", "revision"],
)
def test_missing_repo_file_and_revision_raise_the_clients_typed_errors(hub, repo, filename, revision, expected):
    hub.commit("org/repo", {"config.json": b"{}"})
    with pytest.raises(expected):
        hf_hub_download(repo, filename, revision=revision)


def test_upload_folder_through_the_real_client_stores_weights_as_lfs(hub, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(WEIGHTS)
    (tmp_path / "config.json").write_text("{}")
    api = HfApi()
    api.create_repo("org/pushed")
    info = api.upload_folder(repo_id="org/pushed", folder_path=tmp_path)
    assert hub.head("org/pushed") == info.oid
    assert hub.files("org/pushed") == {"model.safetensors": WEIGHTS, "config.json": b"{}"}
    assert hub.repos["org/pushed"].commits[info.oid].files["model.safetensors"].lfs
    assert ("PUT", f"/lfs-objects/{hashlib.sha256(WEIGHTS).hexdigest()}") in hub.requests


def test_create_repo_with_exist_ok_accepts_an_existing_repo(hub):
    hub.create_repo("org/repo")
    url = HfApi().create_repo("org/repo", exist_ok=True)
    assert url.repo_id == "org/repo"


def test_a_commit_to_a_new_branch_leaves_main_untouched(hub, tmp_path):
    main = hub.commit("org/repo", {"a.txt": b"main"})
    api = HfApi()
    api.create_branch("org/repo", branch="dev")
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="a.txt", repo_id="org/repo", revision="dev")
    assert hub.head("org/repo") == main
    assert hub.files("org/repo", "dev") == {"a.txt": b"dev"}


def test_the_truncate_fault_trips_the_clients_size_check(hub):
    hub.commit("org/repo", {"model.safetensors": WEIGHTS})
    hub.set_fault("org/repo", "model.safetensors", "truncate")
    with pytest.raises(OSError, match="Consistency check failed"):
        hf_hub_download("org/repo", "model.safetensors")


def test_a_download_dropped_once_resumes_with_a_range_request(hub):
    hub.commit("org/repo", {"model.safetensors": WEIGHTS})
    hub.set_fault("org/repo", "model.safetensors", "drop_once")
    assert open(hf_hub_download("org/repo", "model.safetensors"), "rb").read() == WEIGHTS
    assert len(hub.downloads("model.safetensors")) == 2


def test_a_private_server_from_serve_answers_a_client_given_its_endpoint(tmp_path):
    with serve() as server:
        server.commit("org/own", {"a.txt": b"own"})
        path = hf_hub_download("org/own", "a.txt", endpoint=server.url, cache_dir=tmp_path)
        assert open(path, "rb").read() == b"own"


def test_the_installed_client_is_in_the_range_pyproject_declares_for_it():
    """The range pyproject.toml promises is the one this server is tested against: the client installed here."""
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    (spec,) = [r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "huggingface-hub"]
    assert version("huggingface_hub") in spec.specifier, f"installed {version('huggingface_hub')}, declared {spec}"

"""A local stand-in for the Hugging Face Hub, for tests that drive the real ``huggingface_hub`` client.

It serves model repos from memory on 127.0.0.1 (a free port), with real commits, branches and tags:

read side (what ``hf_hub_download``, ``snapshot_download``, ``model_info`` and ``list_repo_tree`` call)
    GET  /api/models/{repo}                          repo info at main (id, sha, siblings)
    GET  /api/models/{repo}/revision/{rev}           repo info at a branch, tag or commit
    GET  /api/models/{repo}/tree/{rev}[/{path}]      folder listing (``?recursive=true`` for all levels)
    HEAD/GET /{repo}/resolve/{rev}/{path}            file metadata and content (``Range: bytes=a-b`` -> 206)

write side (what ``create_repo``, ``create_branch``, ``upload_folder``/``create_commit`` call on the plain
LFS path; Xet needs ``HF_HUB_DISABLE_XET=1`` in the client, which tests/conftest.py sets)
    POST /api/repos/create                           409 when it exists (``exist_ok`` handles that)
    POST /api/models/{repo}/branch/{branch}          new branch at main (or ``startingPoint``)
    POST /api/validate-yaml                          card YAML check: always fine
    POST /api/models/{repo}/preupload/{rev}          "lfs" for weight suffixes and big files, else "regular"
    POST /{repo}.git/info/lfs/objects/batch          basic transfer: one PUT per object
    PUT  /lfs-objects/{sha256}                       the upload; its sha256 and size are checked
    POST /api/models/{repo}/commit/{rev}             NDJSON: header, file, lfsFile, deletedFile, deletedFolder

Responses follow what huggingface_hub 2.4 checks (file_download.py, utils/_http.py): every resolve
answer carries ``X-Repo-Commit``, an ``ETag`` that is the git blob sha1 of a regular file or the sha256
of an LFS file (with ``X-Linked-Etag``/``X-Linked-Size`` as the Hub sends for LFS), and a
``Content-Length``; no ``X-Xet-Hash``, so downloads take plain HTTP. Errors carry ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) with status 404, and a 404 for a missing
file also carries ``X-Repo-Commit``, as the Hub's does.

Faults for robustness tests, per (repo, path), set with :meth:`HubServer.set_fault`:
    "truncate"  GET sends the first half of the file with an honest short Content-Length
                (the metadata still gives the full size): the client's size check must catch it.
    "corrupt"   GET sends as many bytes as the file has, but different ones: only a hash check catches it.
    "drop"      GET promises the full Content-Length, sends half and closes the connection; resumed
                (Range) requests get the headers and no bytes, so the client gives up after its retries.
    "drop_once" like "drop" for the first GET only; later requests are served whole (Range resume works).

Use the ``hub`` fixture of tests/conftest.py (one server per test session, the client's HF_ENDPOINT,
emptied before each test, with a fresh Hub cache), or :func:`serve` as a context manager for a
private server (then pass ``endpoint=server.url`` to the client). ``HubServer.requests`` logs
``(method, path)`` of every request; ``downloads(suffix)`` lists the file GETs.

    def test_my_model_loads_from_the_hub(hub, tmp_path):
        hub.upload_folder("org/my-model", my_model.save_pretrained(tmp_path / "m"))   # -> commit sha
        loaded = zoo.load("hf-hub:org/my-model")
        hub.commit("org/my-model", {"config.json": b"..."}, delete=("model.safetensors",))  # a new commit
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

# Files the preupload endpoint sends through LFS, as the Hub's default .gitattributes does.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".onnx", ".npy", ".npz", ".h5", ".msgpack")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub refuses regular files above 10 MB
FAULTS = ("truncate", "corrupt", "drop", "drop_once")
_SHA = re.compile(r"[0-9a-f]{40}")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: sha1 over ``b"blob <size>\\0" + data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs_path(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def git_oid(self) -> str:
        return git_blob_sha1(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag: sha256 for LFS files, the git blob sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]
    date: float


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch, a tag or a full commit sha -> that commit."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and _SHA.fullmatch(revision):
            sha = revision
        return self.commits.get(sha) if sha else None


class HubError(Exception):
    """An error response: HTTP status, X-Error-Code, message, and extra headers."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None, **body):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})
        self.body = body  # extra JSON fields of the error body (the Hub's 409 on create names the repo url)


class HubServer:
    """The in-memory store plus the HTTP server that serves it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content uploaded through the LFS batch API
        self.faults: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self._counter = 0
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="hubserver", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def reset(self) -> None:
        """Forget every repo, upload, fault and logged request."""
        with self._lock:
            self.repos.clear()
            self.lfs_objects.clear()
            self.faults.clear()
            self.requests.clear()

    # ---- the store, for tests -------------------------------------------------------------------
    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = False) -> Repo:
        """An empty repo whose main branch has one empty initial commit (as the Hub makes them)."""
        with self._lock:
            if repo_id in self.repos:
                if exist_ok:
                    return self.repos[repo_id]
                message = f"You already created this model repo: {repo_id}"
                raise HubError(409, None, message, url=self._repo_url(repo_id))
            repo = self.repos[repo_id] = Repo(repo_id, private=private)
            initial = self._new_commit(repo, None, "initial commit", {})
            repo.branches["main"] = initial.sha
            return repo

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str | Path | StoredFile] | None = None,
        delete: tuple[str, ...] = (),
        message: str = "update",
        revision: str = "main",
        lfs: bool | None = None,
    ) -> str:
        """Add/replace ``files`` (bytes, text, or a local path) and delete paths on branch ``revision``;
        returns the new commit sha. The repo is created if needed. ``lfs`` forces the storage kind."""
        with self._lock:
            repo = self.repos.get(repo_id) or self.create_repo(repo_id)
            if revision not in repo.branches:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            tree = dict(repo.commits[repo.branches[revision]].files)
            for path in delete:
                tree.pop(path, None)
            for path, content in (files or {}).items():
                if isinstance(content, StoredFile):
                    tree[path] = content
                    continue
                data = _as_bytes(content)
                tree[path] = StoredFile(data, is_lfs_path(path, len(data)) if lfs is None else lfs)
            new = self._new_commit(repo, repo.branches[revision], message, tree)
            repo.branches[revision] = new.sha
            return new.sha

    def upload_folder(self, repo_id: str, folder: str | Path, message: str = "upload folder", **kwargs) -> str:
        """Commit every file under ``folder`` (paths relative to it) to the repo."""
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.commit(repo_id, files, message=message, **kwargs)

    def create_branch(self, repo_id: str, branch: str, revision: str = "main") -> str:
        with self._lock:
            repo = self._repo(repo_id)
            commit = self._commit_at(repo, revision)
            if branch in repo.branches:
                raise HubError(409, None, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = commit.sha
            return commit.sha

    def tag(self, repo_id: str, tag: str, revision: str = "main") -> str:
        with self._lock:
            repo = self._repo(repo_id)
            repo.tags[tag] = self._commit_at(repo, revision).sha
            return repo.tags[tag]

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha a revision points at."""
        with self._lock:
            return self._commit_at(self._repo(repo_id), revision).sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            commit = self._commit_at(self._repo(repo_id), revision)
            return {path: f.data for path, f in commit.files.items()}

    def set_fault(self, repo_id: str, path: str, kind: str | None) -> None:
        """Make GETs of one file misbehave (see the module docstring); ``None`` clears the fault."""
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose one of {', '.join(FAULTS)}")
        with self._lock:
            if kind is None:
                self.faults.pop((repo_id, path), None)
            else:
                self.faults[(repo_id, path)] = kind

    def downloads(self, path_suffix: str = "") -> list[str]:
        """Paths of the GET /resolve/ requests logged so far (optionally those ending with a suffix)."""
        return [p for m, p in self.requests if m == "GET" and "/resolve/" in p and p.endswith(path_suffix)]

    # ---- internals ------------------------------------------------------------------------------
    def _new_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, StoredFile]) -> Commit:
        self._counter += 1
        listing = sorted((p, f.git_oid) for p, f in files.items())
        seed = json.dumps([repo.repo_id, parent, message, listing, self._counter]).encode()
        commit = Commit(hashlib.sha1(seed).hexdigest(), parent, message, files, time.time())
        repo.commits[commit.sha] = commit
        return commit

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"

    def _repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit


def _as_bytes(content: bytes | str | Path) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, Path):
        return content.read_bytes()
    return content.encode()


# ---- HTTP ---------------------------------------------------------------------------------------
def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        hub = server

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every response has a Content-Length
    hub: HubServer

    def log_message(self, format, *args):  # quiet: tests read HubServer.requests instead
        pass

    # ---- dispatch -------------------------------------------------------------------------------
    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.hub.requests.append((method, url.path))
        body = self._read_body() if method in ("POST", "PUT") else b""
        parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
        try:
            self._route(method, parts, body)
        except HubError as err:
            self._send_error(err)

    def _route(self, method: str, parts: list[str], body: bytes) -> None:
        hub = self.hub
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if method == "GET" and not rest:
                return self._repo_info(repo_id, "main")
            if method == "GET" and rest[0] == "revision" and len(rest) == 2:
                return self._repo_info(repo_id, rest[1])
            if method == "GET" and rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]))
            if method == "POST" and rest[0] == "preupload" and len(rest) == 2:
                return self._preupload(repo_id, rest[1], json.loads(body))
            if method == "POST" and rest[0] == "commit" and len(rest) == 2:
                return self._commit(repo_id, rest[1], body)
            if method == "POST" and rest[0] == "branch" and len(rest) == 2:
                start = (json.loads(body) if body else {}).get("startingPoint") or "main"
                hub.create_branch(repo_id, rest[1], start)
                return self._send_json({})
        if method == "POST" and parts == ["api", "repos", "create"]:
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            if payload.get("type", "model") != "model":
                raise HubError(400, None, "this test Hub serves model repos only")
            hub.create_repo(repo_id, private=payload.get("visibility") == "private")
            return self._send_json({"url": hub._repo_url(repo_id), "name": repo_id, "id": repo_id})
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._send_json({"errors": [], "warnings": []})
        if (
            method == "POST"
            and len(parts) == 6
            and parts[1].endswith(".git")
            and parts[2:] == list(("info", "lfs", "objects", "batch"))
        ):
            return self._lfs_batch(f"{parts[0]}/{parts[1][: -len('.git')]}", json.loads(body))
        if method == "PUT" and len(parts) == 2 and parts[0] == "lfs-objects":
            return self._lfs_put(parts[1], body)
        if method in ("HEAD", "GET") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, None, f"no such endpoint: {method} {self.path}")

    # ---- read side ------------------------------------------------------------------------------
    def _repo_info(self, repo_id: str, revision: str) -> None:
        with self.hub._lock:
            repo = self.hub._repo(repo_id)
            commit = self.hub._commit_at(repo, revision)
            info = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit.sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            }
        self._send_json(info)

    def _tree(self, repo_id: str, revision: str, path: str) -> None:
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        with self.hub._lock:
            commit = self.hub._commit_at(self.hub._repo(repo_id), revision)
            files = commit.files
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}", {"X-Repo-Commit": commit.sha})
        entries, folders = [], set()
        for p in sorted(files):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix) :].split("/")
            for depth in range(1, len(rest)):  # the folders on the way down to this file
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                f = files[p]
                entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": p}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries.append(entry)
        folder_oid = lambda name: hashlib.sha1(f"tree {commit.sha} {name}".encode()).hexdigest()
        entries += [{"type": "directory", "oid": folder_oid(d), "size": 0, "path": d} for d in sorted(folders)]
        self._send_json(sorted(entries, key=lambda e: e["path"]))

    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        with self.hub._lock:
            commit = self.hub._commit_at(self.hub._repo(repo_id), revision)
            stored = commit.files.get(path)
            fault = self.hub.faults.get((repo_id, path)) if method == "GET" else None
            if fault == "drop_once":
                self.hub.faults.pop((repo_id, path))
        if stored is None:
            raise HubError(
                404, "EntryNotFound", f"{path} does not exist at {revision} of {repo_id}", {"X-Repo-Commit": commit.sha}
            )
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{stored.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.etag}"', "X-Linked-Size": str(stored.size)})
        data, status = stored.data, 200
        ranged = self.headers.get("Range")
        if ranged:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())
            if not match:
                raise HubError(416, None, f"unsupported Range {ranged!r}")
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else stored.size - 1
            if start >= stored.size or end < start:
                raise HubError(416, None, f"Range {ranged!r} outside 0..{stored.size - 1}")
            end = min(end, stored.size - 1)
            data, status = stored.data[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
        if method == "HEAD":
            return self._send(status, data, headers)
        if fault == "truncate":
            return self._send(status, data[: len(data) // 2], headers)
        if fault == "corrupt":
            flipped = bytes(b ^ 0xFF for b in data[-64:])
            return self._send(status, data[:-64] + flipped, headers)
        if fault in ("drop", "drop_once"):
            sent = data[: len(data) // 2] if not ranged else b""
            self._send(status, sent, headers, content_length=len(data))
            self.close_connection = True  # the peer sees the body end early
            return None
        return self._send(status, data, headers)

    # ---- write side -----------------------------------------------------------------------------
    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        with self.hub._lock:
            commit = self.hub._commit_at(self.hub._repo(repo_id), revision)
            answers = []
            for item in payload.get("files", []):
                lfs = is_lfs_path(item["path"], item["size"])
                existing = commit.files.get(item["path"])
                oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
                answers.append(
                    {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
        self._send_json({"files": answers, "commitOid": commit.sha})

    def _lfs_batch(self, repo_id: str, payload: dict) -> None:
        self.hub._repo(repo_id)
        if payload.get("operation") != "upload":
            raise HubError(400, None, "this test Hub takes LFS uploads only")
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:  # already stored objects need no upload
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-objects/{obj['oid']}"}}
            objects.append(entry)
        self._send_json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, body: bytes) -> None:
        actual = hashlib.sha256(body).hexdigest()
        if actual != oid:
            raise HubError(400, None, f"LFS upload for {oid} has sha256 {actual}")
        with self.hub._lock:
            self.hub.lfs_objects[oid] = body
        self._send(200, b"", {})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, None, "commit payload must start with a header line")
        header = lines[0]["value"]
        added: dict[str, StoredFile] = {}  # stored as the client sent them: inline (regular) or through LFS
        deleted: list[str] = []
        deleted_folders: list[str] = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                added[value["path"]] = StoredFile(data, lfs=False)
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    raise HubError(400, None, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                added[value["path"]] = StoredFile(data, lfs=True)
            elif key == "deletedFile":
                deleted.append(value["path"])
            elif key == "deletedFolder":
                deleted_folders.append(value["path"].rstrip("/") + "/")
            else:
                raise HubError(400, None, f"unsupported commit operation {key!r}")
        with self.hub._lock:
            repo = self.hub._repo(repo_id)
            head = self.hub._commit_at(repo, revision)
            if revision not in repo.branches:
                raise HubError(400, None, f"can only commit to a branch, not {revision!r}")
            parent = header.get("parentCommit")
            if parent and parent != head.sha:
                raise HubError(412, None, f"parentCommit {parent} is not the head of {revision} ({head.sha})")
            for path in deleted:
                if path not in head.files:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
            gone = [p for p in head.files if any(p.startswith(folder) for folder in deleted_folders)]
            sha = self.hub.commit(
                repo_id, added, delete=(*deleted, *gone), message=header.get("summary", ""), revision=revision
            )
        self._send_json({"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True})

    # ---- wire helpers ---------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], content_length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        if body and self.command != "HEAD":  # a HEAD answer states the length but carries no body
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, payload, status: int = 200, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": content_type})

    def _send_error(self, err: HubError) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send(err.status, json.dumps({"error": err.message, **err.body}).encode(), headers)


@contextmanager
def serve() -> Iterator[HubServer]:
    """A fresh server on a free port for the duration of a ``with`` block.

    The client reads ``HF_ENDPOINT`` once, when huggingface_hub is imported: pass ``endpoint=server.url``
    to the client calls, or run the client in a subprocess with ``HF_ENDPOINT=server.url``.
    """
    server = HubServer().start()
    try:
        yield server
    finally:
        server.stop()


def resolve_url(server: HubServer, repo_id: str, path: str, revision: str = "main") -> str:
    return f"{server.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

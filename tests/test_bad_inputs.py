"""The bad-input matrix (issue 12, item 3): what users really send, for every family, through the Python API
and the CLI.

Each case is either a clear error or a documented conversion:

- ``ERROR`` cases raise a ``zoo.errors`` type (mostly InputError / ConfigError subclasses) whose message names
  the problem. At the CLI the same input exits with code 2, prints ``tokenzoo CMD: error: ...`` naming it, never
  a traceback, and leaves nothing on disk (the test folder is listed before and after, hidden files included).
- ``CONVERSION`` cases are accepted as the docs say (grayscale/RGBA/1x1/extreme-aspect images become RGB at
  the model's size; stereo/24-bit/float/8 kHz/44.1 kHz WAV become 16 kHz mono float; float64 pose clips and
  integer EM volumes are cast/min-max scaled; a 10-minute clip goes through bounded windows).

The CLI cases run ``zoo.cli.main`` in-process (its exit code and stderr are what ``python -m zoo.cli`` gives;
an exception escaping it would be the traceback) and a few run as real subprocesses. ``python -m
tests.test_bad_inputs`` prints how many inputs the matrix tries, by family, surface and outcome.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zoo.api import Tokens
from zoo.errors import (
    ConfigError,
    CorruptFileError,
    InputError,
    InputFileError,
    NotSupportedError,
    TokensMismatchError,
    UnknownModelError,
    ZooError,
)

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("text", "flextok", "seed", "pose", "s3tokenizer", "tokenunify", "touchtts")
CUDA = torch.cuda.is_available()


# ---- the files users send ----------------------------------------------------------------------
def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def make_files(folder: Path) -> Path:
    """Every bad (and oddly shaped but valid) input file the matrix uses, written once per session."""
    import soundfile as sf
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    picture = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    _png(folder / "ok.png", picture)
    from PIL import Image

    Image.fromarray(picture).save(folder / "ok.jpg", quality=90)
    for ext in ("png", "jpg"):
        data = (folder / f"ok.{ext}").read_bytes()
        (folder / f"empty.{ext}").write_bytes(b"")
        (folder / f"truncated.{ext}").write_bytes(data[: len(data) // 2])
        (folder / f"corrupt.{ext}").write_bytes(data[:16] + rng.integers(0, 256, 600, dtype=np.uint8).tobytes())
    _png(folder / "gray.png", picture[..., 0])
    _png(folder / "rgba.png", np.concatenate([picture, np.full((48, 64, 1), 128, np.uint8)], axis=-1))
    _png(folder / "one-pixel.png", picture[:1, :1])
    _png(folder / "wide.png", rng.integers(0, 256, (2, 900, 3), dtype=np.uint8))

    t = np.arange(16000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    sf.write(folder / "ok.wav", speech, 16000)
    data = (folder / "ok.wav").read_bytes()
    (folder / "empty.wav").write_bytes(b"")
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.wav").write_bytes(data[:12] + rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
    sf.write(folder / "stereo.wav", np.stack([speech, speech], axis=1), 16000)
    sf.write(folder / "pcm24.wav", speech, 16000, subtype="PCM_24")
    sf.write(folder / "float.wav", speech, 16000, subtype="FLOAT")
    sf.write(folder / "rate8k.wav", speech[::2], 8000)
    sf.write(folder / "rate44k.wav", np.interp(np.arange(44100) / 44100, t, speech).astype(np.float32), 44100)
    sf.write(folder / "short.wav", speech[:100], 16000)  # 6 ms: less than one mel frame

    (folder / "hello.txt").write_text("hello world", encoding="utf-8")
    (folder / "latin1.txt").write_bytes("café crème".encode("latin-1"))

    tokens = folder / "tokens.safetensors"
    Tokens(ids=torch.tensor([[104, 105]])).save(tokens)
    data = tokens.read_bytes()
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "truncated.safetensors").write_bytes(data[: len(data) - 5])
    (folder / "corrupt.safetensors").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    torch.save({"weight": torch.zeros(2)}, folder / "pickle.safetensors")  # a pickle by its bytes
    save_file({"x": torch.zeros(1)}, str(folder / "not-tokens.safetensors"))  # safetensors, not a tokens file

    clip = rng.normal(size=(12, 17, 2)).astype(np.float32)
    np.savez(folder / "empty.npz")
    (folder / "zero-bytes.npz").write_bytes(b"")
    np.savez(folder / "clip.npz", kp2d=clip)
    data = (folder / "clip.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.save(folder / "clip.npy", clip)
    np.save(folder / "clip-float64.npy", clip.astype(np.float64))
    np.save(folder / "clip-nan.npy", np.where(np.arange(12)[:, None, None] == 3, np.nan, clip))
    np.save(folder / "clip-inf.npy", np.where(np.arange(12)[:, None, None] == 3, np.inf, clip))
    np.save(folder / "clip-16-joints.npy", clip[:, :16])
    np.save(folder / "clip-3-frames.npy", clip[:3])

    volume = rng.random((16, 32, 80), dtype=np.float32)
    np.save(folder / "volume.npy", volume)
    np.save(folder / "volume-small.npy", volume[:4, :4, :4])  # smaller than one 16-voxel patch
    np.save(folder / "volume-nan.npy", np.where(volume > 0.99, np.nan, volume))
    np.save(folder / "volume-0-1000.npy", volume * 1000)  # float, but not in [0, 1]
    np.save(folder / "volume-uint8.npy", (volume * 255).astype(np.uint8))
    np.savez(folder / "volume-no-key.npz", labels=np.zeros((2, 2, 2), np.int64))

    (folder / "a-folder").mkdir(exist_ok=True)
    for name, target in (("dangling.txt", "nowhere.txt"), ("loop.txt", "loop.txt")):
        if not (folder / name).is_symlink():
            os.symlink(target, folder / name)
    return folder


# ---- models -------------------------------------------------------------------------------------
@functools.cache
def model(name: str):
    """A model by name or folder, loaded once per session."""
    import zoo

    return zoo.load(name)


def save_small_models(folder: Path) -> dict[str, str]:
    """Folders of the two families without a bundled model, so the CLI can load them by path."""
    from audio.touchtts.model import TouchTTS, tiny_config
    from video_pose.motionbert import MotionBERT, MotionBERTConfig

    torch.manual_seed(0)
    folders = {}
    for key, built in (
        (
            "motionbert",
            lambda: MotionBERT(
                MotionBERTConfig(num_frames=12, dim=16, mlp_hidden_dim=32, depth=2, num_heads=2, dim_rep=24)
            ),
        ),
        ("touchtts", lambda: TouchTTS(tiny_config(64))),
    ):
        path = folder / key
        if not (path / "config.json").is_file():
            built().eval().save_pretrained(path)
        folders[key] = str(path)
    return folders


@dataclass
class Env:
    """What a case sees: the session's input files, the small model folders, and this test's own folder."""

    files: Path
    folders: dict[str, str]
    tmp: Path

    def f(self, name: str) -> str:
        return str(self.files / name)

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def model(self, key: str):
        return model(self.folders.get(key, key))

    def tokens_file(self, name: str, tokens: Tokens) -> str:
        return str(tokens.save(self.tmp / name))


@dataclass(frozen=True)
class Case:
    """One bad input. ``run`` raises (API) or returns argv (CLI); ``match`` is searched in the message."""

    id: str
    family: str
    surface: str  # "api" or "cli"
    run: Callable[[Env], Any]
    match: str = ""
    error: type[BaseException] = ZooError
    outcome: str = "error"  # or "conversion"
    check: Callable[[Env, Any], None] | None = field(default=None, compare=False)


CASES: list[Case] = []


def api(id, family, run, match, error=ZooError):
    CASES.append(Case(id, family, "api", run, match, error))


def cli(id, family, argv, match):
    CASES.append(Case(id, family, "cli", argv, match))


def converts(id, family, surface, run, check=None):
    CASES.append(Case(id, family, surface, run, outcome="conversion", check=check))


# ---- every family: inputs that are not inputs, paths that are not files, devices, names ---------------
RAW_MODELS = {
    "text": "byte-utf8",
    "flextok": "flextok-tiny",
    "seed": "seed-tiny",
    "pose": "mixste-tiny",
    "s3tokenizer": "s3tokenizer-tiny",
    "tokenunify": "tokenunify-tiny",
    "touchtts": "touchtts",
}
SAMPLE_INPUT = {
    "text": "hello.txt",
    "flextok": "ok.png",
    "seed": "ok.jpg",
    "pose": "clip.npy",
    "s3tokenizer": "ok.wav",
    "tokenunify": "volume.npy",
    "touchtts": "hello.txt",
}


def _cli_model(env: Env, family: str) -> str:
    name = RAW_MODELS[family]
    return env.folders.get(name, name)


def _as_item(family: str, path: str) -> Any:
    """A path as each family's encode takes a file: text models read ``pathlib.Path`` (a str is text)."""
    return Path(path) if family in ("text", "touchtts") else path


for family in FAMILIES:
    for value in (123, None):
        api(
            f"encode({value!r})",
            family,
            lambda e, f=family, v=value: e.model(RAW_MODELS[f]).encode(v),
            f"{type(value).__name__}|{value!r}",
            InputError,
        )
    for item, match in (
        ("a-folder", "is a directory"),
        ("missing.bin", "not found"),
        ("dangling.txt", "dangling symlink"),
        ("loop.txt", "symlink loop"),
    ):
        api(
            f"encode({item})",
            family,
            lambda e, f=family, i=item: e.model(RAW_MODELS[f]).encode(_as_item(f, e.f(i))),
            match,
            InputFileError,
        )
    cli(
        "input is a directory",
        family,
        lambda e, f=family: ["encode", _cli_model(e, f), e.f("a-folder"), "--out", str(e.out / "t.safetensors")],
        "is a directory",
    )
    cli(
        "input is missing",
        family,
        lambda e, f=family: ["encode", _cli_model(e, f), e.f("missing.bin"), "--out", str(e.out / "t.safetensors")],
        "missing.bin not found",
    )
    cli(
        "--device gpu0",
        family,
        lambda e, f=family: [
            "encode",
            _cli_model(e, f),
            e.f(SAMPLE_INPUT[f]),
            "--out",
            str(e.out / "t.safetensors"),
            "--device",
            "gpu0",
        ],
        "unknown device 'gpu0'",
    )
    if not CUDA:
        cli(
            "--device cuda without CUDA",
            family,
            lambda e, f=family: [
                "encode",
                _cli_model(e, f),
                e.f(SAMPLE_INPUT[f]),
                "--out",
                str(e.out / "t.safetensors"),
                "--device",
                "cuda",
            ],
            "CUDA is not available",
        )
    cli(
        "--out is a directory",
        family,
        lambda e, f=family: ["encode", _cli_model(e, f), e.f(SAMPLE_INPUT[f]), "--out", e.f("a-folder")],
        "is a directory",
    )

# ---- paths, names, outputs (the CLI's shared machinery, exercised once) -------------------------------
cli(
    "dangling symlink",
    "text",
    lambda e: ["encode", "byte-utf8", e.f("dangling.txt"), "--out", str(e.out / "t.st")],
    "dangling symlink",
)
cli(
    "symlink loop",
    "text",
    lambda e: ["encode", "byte-utf8", e.f("loop.txt"), "--out", str(e.out / "t.st")],
    "symlink loop",
)
cli(
    "--out an existing file that is no tokens file",
    "text",
    lambda e: ["encode", "byte-utf8", e.f("hello.txt"), "--out", e.f("latin1.txt")],
    "not a tokens file",
)
cli(
    "--out unwritable",
    "text",
    lambda e: ["encode", "byte-utf8", e.f("hello.txt"), "--out", "/proc/tokenzoo/t.safetensors"],
    "cannot",
)
cli(
    "--out below a file",
    "text",
    lambda e: ["encode", "byte-utf8", e.f("hello.txt"), "--out", e.f("hello.txt") + "/t.safetensors"],
    "is a file, not a folder",
)
cli(
    "--revision on a bundled model",
    "text",
    lambda e: ["encode", "byte-utf8", e.f("hello.txt"), "--out", str(e.out / "t.st"), "--revision", "v9"],
    "bundled with tokenzoo",
)
cli(
    "unknown model close to a real one",
    "text",
    lambda e: ["encode", "byte-utf", e.f("hello.txt"), "--out", str(e.out / "t.st")],
    "Did you mean: byte-utf8",
)
cli(
    "unknown model close to a real one",
    "flextok",
    lambda e: ["encode", "flextok-tine", e.f("ok.png"), "--out", str(e.out / "t.st")],
    "Did you mean: flextok-tiny",
)
cli(
    "malformed hf-hub: id",
    "text",
    lambda e: ["encode", "hf-hub:a/b..c", e.f("hello.txt"), "--out", str(e.out / "t.st")],
    "not a valid Hub repo id",
)
cli(
    "malformed hf-hub: id (no name)",
    "text",
    lambda e: ["encode", "hf-hub:justorg", e.f("hello.txt"), "--out", str(e.out / "t.st")],
    "not a valid Hub repo id",
)
api("load: malformed hf-hub: id", "text", lambda e: __import__("zoo").load("hf-hub:a/b..c"), "'..'", ConfigError)
api(
    "load: --device gpu0",
    "text",
    lambda e: __import__("zoo").load("byte-utf8", device="gpu0"),
    "unknown device",
    ConfigError,
)
if not CUDA:
    api(
        "load: device cuda without CUDA",
        "text",
        lambda e: __import__("zoo").load("byte-utf8", device="cuda"),
        "CUDA is not available",
        ConfigError,
    )
api(
    "load: revision on a bundled model",
    "text",
    lambda e: __import__("zoo").load("byte-utf8", revision="v9"),
    "no revisions",
    ConfigError,
)
api(
    "load: unknown model close to a real one",
    "s3tokenizer",
    lambda e: __import__("zoo").load("s3tokenizer-tin"),
    "Did you mean: s3tokenizer-tiny",
    UnknownModelError,
)

# decode: tokens files and output folders
cli(
    "tokens file is a directory",
    "text",
    lambda e: ["decode", "byte-utf8", e.f("a-folder"), "--out", str(e.out)],
    "is a directory",
)
for kind in ("empty", "truncated", "corrupt"):
    cli(
        f"{kind} tokens file",
        "text",
        lambda e, k=kind: ["decode", "byte-utf8", e.f(f"{k}.safetensors"), "--out", str(e.out)],
        "is corrupt",
    )
    api(
        f"{kind} tokens file",
        "text",
        lambda e, k=kind: Tokens.load(e.f(f"{k}.safetensors")),
        "is corrupt",
        CorruptFileError,
    )
cli(
    "safetensors that is no tokens file",
    "text",
    lambda e: ["decode", "byte-utf8", e.f("not-tokens.safetensors"), "--out", str(e.out)],
    "not a tokenzoo tokens file",
)
cli(
    "a PNG given as tokens",
    "flextok",
    lambda e: ["decode", "flextok-tiny", e.f("ok.png"), "--out", str(e.out)],
    "is corrupt",
)
cli(
    "decode --out is an existing file",
    "text",
    lambda e: ["decode", "byte-utf8", e.f("tokens.safetensors"), "--out", e.f("hello.txt")],
    "is an existing file",
)
cli(
    "decode --out unwritable",
    "text",
    lambda e: ["decode", "byte-utf8", e.f("tokens.safetensors"), "--out", "/proc/tokenzoo-decoded"],
    "cannot",
)


def _folder_with_a_file(e: Env) -> str:
    (e.tmp / "mine").mkdir()
    (e.tmp / "mine" / "notes.txt").write_text("keep me")
    return str(e.tmp / "mine")


cli(
    "decode --out a folder holding other files",
    "text",
    lambda e: ["decode", "byte-utf8", e.f("tokens.safetensors"), "--out", _folder_with_a_file(e)],
    "holds files",
)

# batch and compare write outputs too
cli(
    "batch --device gpu0",
    "text",
    lambda e: ["batch", "byte-utf8", e.f("hello.txt"), "--out", str(e.out), "--device", "gpu0", "--no-progress"],
    "unknown device",
)
cli(
    "batch --out is an existing file",
    "text",
    lambda e: ["batch", "byte-utf8", e.f("hello.txt"), "--out", e.f("hello.txt"), "--no-progress"],
    "is an existing file",
)
cli(
    "batch --out unwritable",
    "text",
    lambda e: ["batch", "byte-utf8", e.f("hello.txt"), "--out", "/proc/tokenzoo-batch", "--no-progress"],
    "cannot",
)
cli(
    "compare --json is a directory",
    "text",
    lambda e: ["compare", "byte-utf8", "--inputs", e.f("hello.txt"), "--json", e.f("a-folder")],
    "is a directory",
)
cli(
    "compare --json unwritable",
    "text",
    lambda e: ["compare", "byte-utf8", "--inputs", e.f("hello.txt"), "--json", "/proc/tokenzoo/t.json"],
    "cannot",
)

# convert: files that are not what they say
cli(
    "a pickle named .safetensors given to convert",
    "flextok",
    lambda e: ["convert", "flextok", e.f("pickle.safetensors"), "--out", str(e.out)],
    "holds a torch pickle",
)
cli(
    "a PNG given to convert",
    "flextok",
    lambda e: ["convert", "flextok", e.f("ok.png"), "--out", str(e.out)],
    "neither a safetensors file nor a torch checkpoint",
)
cli(
    "a truncated safetensors given to convert",
    "tokenunify",
    lambda e: ["convert", "tokenunify", e.f("truncated.safetensors"), "--out", str(e.out)],
    "truncated",
)

# ---- tokens saved by another model, ids outside the codebook -----------------------------------------


def _made_by(e: Env, name: str, item: str) -> Tokens:
    m = e.model(name)
    return m.encode(m.preprocess([Path(e.f(item))]))


api(
    "text tokens decoded by another text model",
    "text",
    lambda e: e.model("bpe-tiny").decode(e.model("byte-utf8").encode("hello")),
    "made by byte-utf8",
    TokensMismatchError,
)
api(
    "mixste tokens decoded by hot-mixste",
    "pose",
    lambda e: e.model("hot-mixste-tiny").decode(_made_by(e, "mixste-tiny", "clip.npy")),
    "arch mixste vs hot-mixste",
    TokensMismatchError,
)
api(
    "flextok tokens decoded by seed",
    "seed",
    lambda e: e.model("seed-tiny").decode(_made_by(e, "flextok-tiny", "ok.png")),
    "made by flextok-tiny",
    TokensMismatchError,
)
api(
    "S3 tokens of another codebook decoded by TouchTTS",
    "touchtts",
    lambda e: e.model("touchtts").decode(_made_by(e, "s3tokenizer-tiny", "ok.wav")),
    "6561-token codebook",
    TokensMismatchError,
)
api(
    "seed tokens decoded by tokenunify",
    "tokenunify",
    lambda e: e.model("tokenunify-tiny").decode(_made_by(e, "seed-tiny", "ok.png")),
    "arch seed vs tokenunify",
    TokensMismatchError,
)
cli(
    "text tokens decoded by another text model",
    "text",
    lambda e: [
        "decode",
        "bpe-tiny",
        e.tokens_file("t.safetensors", e.model("byte-utf8").encode("hello")),
        "--out",
        str(e.out),
    ],
    "made by byte-utf8",
)
cli(
    "mixste tokens decoded by hot-mixste",
    "pose",
    lambda e: [
        "decode",
        "hot-mixste-tiny",
        e.tokens_file("t.safetensors", _made_by(e, "mixste-tiny", "clip.npy")),
        "--out",
        str(e.out),
    ],
    "arch mixste vs hot-mixste",
)
cli(
    "S3 tokens of another codebook decoded by TouchTTS",
    "touchtts",
    lambda e: [
        "decode",
        e.folders["touchtts"],
        e.tokens_file("t.safetensors", _made_by(e, "s3tokenizer-tiny", "ok.wav")),
        "--out",
        str(e.out),
    ],
    "6561-token codebook",
)
cli(
    "S3Tokenizer has no decoder",
    "s3tokenizer",
    lambda e: [
        "decode",
        "s3tokenizer-tiny",
        e.tokens_file("t.safetensors", _made_by(e, "s3tokenizer-tiny", "ok.wav")),
        "--out",
        str(e.out),
    ],
    "has no decoder",
)
api(
    "S3Tokenizer has no decoder",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").decode(_made_by(e, "s3tokenizer-tiny", "ok.wav")),
    "has no decoder",
    NotSupportedError,
)

OUTSIDE = {
    "text": ("byte-utf8", 300),
    "flextok": ("flextok-tiny", 10**6),
    "seed": ("seed-tiny", -1),
    "touchtts": ("touchtts", 9999),
}


def _outside(e: Env, family: str) -> Tokens:
    name, value = OUTSIDE[family]
    if family == "touchtts":  # speech ids as an S3Tokenizer of its codebook would give them
        made = e.model(name).stamp(Tokens(ids=torch.tensor([[1, 2, 3]])))
    else:
        made = _made_by(e, name, SAMPLE_INPUT[family])
    ids = made.ids.clone()
    ids[0, 0] = value
    return Tokens(ids=ids, mask=made.mask, meta=dict(made.meta))


for family in OUTSIDE:
    api(
        f"ids outside the codebook ({OUTSIDE[family][1]})",
        family,
        lambda e, f=family: e.model(OUTSIDE[f][0]).decode(_outside(e, f)),
        "must lie in",
        InputError,
    )
    cli(
        f"ids outside the codebook ({OUTSIDE[family][1]})",
        family,
        lambda e, f=family: [
            "decode",
            _cli_model(e, f),
            e.tokens_file("t.safetensors", _outside(e, f)),
            "--out",
            str(e.out),
        ],
        "must lie in",
    )

# ---- text --------------------------------------------------------------------------------------------
cli(
    "non-UTF-8 text",
    "text",
    lambda e: ["encode", "byte-utf8", e.f("latin1.txt"), "--out", str(e.out / "t.st")],
    "not valid UTF-8",
)
api(
    "non-UTF-8 text file",
    "text",
    lambda e: e.model("byte-utf8").encode(Path(e.f("latin1.txt"))),
    "latin1.txt",
    InputError,
)
api(
    "non-UTF-8 bytes",
    "text",
    lambda e: e.model("bpe-tiny").encode("café".encode("latin-1")),
    "not valid UTF-8",
    InputError,
)
cli(
    "non-UTF-8 text",
    "touchtts",
    lambda e: ["encode", e.folders["touchtts"], e.f("latin1.txt"), "--out", str(e.out / "t.st")],
    "not valid UTF-8",
)
api(
    "non-UTF-8 text file",
    "touchtts",
    lambda e: e.model("touchtts").encode(Path(e.f("latin1.txt"))),
    "not valid UTF-8",
    InputError,
)
api("a dict for text", "touchtts", lambda e: e.model("touchtts").encode({"text": "hi"}), "must be a string", InputError)

# ---- images ------------------------------------------------------------------------------------------
for family, name in (("flextok", "flextok-tiny"), ("seed", "seed-tiny")):
    for ext in ("png", "jpg"):
        for kind, match in (("empty", "cannot read"), ("truncated", "truncated"), ("corrupt", "cannot read")):
            cli(
                f"{kind} {ext.upper()}",
                family,
                lambda e, n=name, k=kind, x=ext: ["encode", n, e.f(f"{k}.{x}"), "--out", str(e.out / "t.st")],
                match,
            )
            api(
                f"{kind} {ext.upper()}",
                family,
                lambda e, n=name, k=kind, x=ext: e.model(n).encode(e.f(f"{k}.{x}")),
                match,
                InputError,
            )
    api(
        "float array image",
        family,
        lambda e, n=name: e.model(n).encode(np.zeros((8, 8, 3), np.float32)),
        "must be uint8",
        InputError,
    )
    api(
        "NaN image tensor",
        family,
        lambda e, n=name: e.model(n).encode(
            torch.full((1, 3, e.model(n).config.image_size, e.model(n).config.image_size), float("nan"))
        ),
        "NaN",
        InputError,
    )
    api(
        "two-channel array image",
        family,
        lambda e, n=name: e.model(n).encode(np.zeros((8, 8, 2), np.uint8)),
        "HxW, HxWx1, HxWx3 or HxWx4",
        InputError,
    )


def _image_tokens(env: Env, tokens: Tokens) -> None:
    assert tokens.ids is not None and tokens.batch_size == 1 and bool(tokens.mask.any())


for family, name in (("flextok", "flextok-tiny"), ("seed", "seed-tiny")):
    for item in ("gray.png", "rgba.png", "one-pixel.png", "wide.png"):
        converts(
            f"{item} becomes RGB at the model's size",
            family,
            "api",
            lambda e, n=name, i=item: e.model(n).encode(e.f(i)),
            _image_tokens,
        )
        converts(
            f"{item} becomes RGB at the model's size",
            family,
            "cli",
            lambda e, n=name, i=item: ["encode", n, e.f(i), "--out", str(e.out / "t.safetensors")],
        )

# ---- audio -------------------------------------------------------------------------------------------
for kind, match in (
    ("empty", "is corrupt"),
    ("truncated", "truncated"),
    ("corrupt", "is corrupt"),
    ("short", "shorter than"),
):
    cli(
        f"{kind} WAV",
        "s3tokenizer",
        lambda e, k=kind: ["encode", "s3tokenizer-tiny", e.f(f"{k}.wav"), "--out", str(e.out / "t.st")],
        match,
    )
    api(
        f"{kind} WAV",
        "s3tokenizer",
        lambda e, k=kind: e.model("s3tokenizer-tiny").encode(e.f(f"{k}.wav")),
        match,
        ZooError,
    )
api(
    "sample_rate=0",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.zeros(16000, np.float32), sample_rate=0),
    "must be positive",
    InputError,
)
api(
    "sample_rate=-8000",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.zeros(16000, np.float32), sample_rate=-8000),
    "must be positive",
    InputError,
)
api(
    "sample_rate='16k'",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.zeros(16000, np.float32), sample_rate="16k"),
    "must be an int",
    InputError,
)
api(
    "sliding_window='bogus'",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.zeros(16000, np.float32), sliding_window="bogus"),
    "sliding_window='bogus'",
    InputError,
)
api(
    "int16 PCM array",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.zeros(16000, np.int16)),
    "divide int16 PCM by 32768",
    InputError,
)
api(
    "NaN waveform",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.full(16000, np.nan, np.float32)),
    "NaN",
    InputError,
)
api(
    "inf waveform",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.full(16000, np.inf, np.float32)),
    "infinite",
    InputError,
)
api(
    "clip shorter than one token (array)",
    "s3tokenizer",
    lambda e: e.model("s3tokenizer-tiny").encode(np.zeros(50, np.float32)),
    "shorter than",
    InputError,
)


def _one_second_of_tokens(env: Env, tokens: Tokens) -> None:
    assert tokens.batch_size == 1 and int(tokens.meta["num_samples"][0]) == 16000, tokens
    assert int(tokens.lengths[0]) == tokens.meta["token_rate"]  # 1 s of speech, 16 kHz mono after conversion


for item in ("stereo.wav", "pcm24.wav", "float.wav", "rate8k.wav", "rate44k.wav"):
    converts(
        f"{item} becomes 16 kHz mono float",
        "s3tokenizer",
        "api",
        lambda e, i=item: e.model("s3tokenizer-tiny").encode(e.f(i)),
        _one_second_of_tokens,
    )
    converts(
        f"{item} becomes 16 kHz mono float",
        "s3tokenizer",
        "cli",
        lambda e, i=item: ["encode", "s3tokenizer-tiny", e.f(i), "--out", str(e.out / "t.safetensors")],
    )
for dtype in ("bf16", "fp16"):
    converts(
        f"--dtype {dtype}",
        "s3tokenizer",
        "cli",
        lambda e, d=dtype: ["encode", "s3tokenizer-tiny", e.f("ok.wav"), "--out", str(e.out / "t.st"), "--dtype", d],
    )
converts(
    "model.to(torch.bfloat16)",
    "s3tokenizer",
    "api",
    lambda e: __import__("zoo").load("s3tokenizer-tiny").to(torch.bfloat16).encode(e.f("ok.wav")),
    _one_second_of_tokens,
)

# ---- pose --------------------------------------------------------------------------------------------
for kind, match in (
    ("empty", "needs a 'kp2d' array"),
    ("zero-bytes", "not a readable numpy file"),
    ("truncated", "not a readable numpy file"),
):
    cli(
        f"{kind} .npz",
        "pose",
        lambda e, k=kind: ["encode", "mixste-tiny", e.f(f"{k}.npz"), "--out", str(e.out / "t.st")],
        match,
    )
    api(f"{kind} .npz", "pose", lambda e, k=kind: e.model("mixste-tiny").encode(e.f(f"{k}.npz")), match, InputError)
for kind, match in (("nan", "NaN"), ("inf", "infinite"), ("16-joints", "16 joints")):
    cli(
        f"clip {kind}",
        "pose",
        lambda e, k=kind: ["encode", "hot-mixste-tiny", e.f(f"clip-{k}.npy"), "--out", str(e.out / "t.st")],
        match,
    )
    api(
        f"clip {kind}",
        "pose",
        lambda e, k=kind: e.model("hot-mixste-tiny").encode(np.load(e.f(f"clip-{k}.npy"))),
        match,
        InputError,
    )
cli(
    "2-channel clip for MotionBERT (x, y, confidence)",
    "pose",
    lambda e: ["encode", e.folders["motionbert"], e.f("clip.npy"), "--out", str(e.out / "t.st")],
    "2 channels",
)
api(
    "2-channel clip for MotionBERT (x, y, confidence)",
    "pose",
    lambda e: e.model("motionbert").encode(np.load(e.f("clip.npy"))),
    "2 channels",
    InputError,
)
cli(
    "clip shorter than HoT keeps",
    "pose",
    lambda e: ["encode", "hot-mixste-tiny", e.f("clip-3-frames.npy"), "--out", str(e.out / "t.st")],
    "needs at least",
)
api(
    "ragged nested list",
    "pose",
    lambda e: e.model("mixste-tiny").encode([[[0.0, 1.0]], [[0.0]]]),
    r"one \(B, F, J, K\)",
    InputError,
)
api("dict without kp2d", "pose", lambda e: e.model("mixste-tiny").encode({"pose3d": np.zeros(3)}), "'kp2d'", InputError)


def _same_as_float32(env: Env, tokens: Tokens) -> None:
    reference = env.model("hot-mixste-tiny").encode(np.load(env.f("clip.npy")))
    assert torch.equal(tokens.meta["kept_frame_indices"], reference.meta["kept_frame_indices"])
    assert torch.allclose(tokens.embeddings, reference.embeddings, atol=1e-5)


converts(
    "float64 clip is cast to the model's float32",
    "pose",
    "api",
    lambda e: e.model("hot-mixste-tiny").encode(torch.from_numpy(np.load(e.f("clip-float64.npy")))[None]),
    _same_as_float32,
)
converts(
    "float64 clip is cast to the model's float32",
    "pose",
    "cli",
    lambda e: ["encode", "hot-mixste-tiny", e.f("clip-float64.npy"), "--out", str(e.out / "t.safetensors")],
)
converts(
    "clip paths and arrays are raw inputs",
    "pose",
    "api",
    lambda e: e.model("hot-mixste-tiny").encode(e.f("clip.npy")),
    _same_as_float32,
)

# ---- EM volumes --------------------------------------------------------------------------------------
for kind, match in (
    ("empty", "needs a 'volume' array"),
    ("zero-bytes", "not a readable .npz"),
    ("truncated", "not a readable .npz"),
    ("volume-no-key", "needs a 'volume' array"),
):
    cli(
        f"{kind} .npz",
        "tokenunify",
        lambda e, k=kind: ["encode", "tokenunify-tiny", e.f(f"{k}.npz"), "--out", str(e.out / "t.st")],
        match,
    )
    api(
        f"{kind} .npz",
        "tokenunify",
        lambda e, k=kind: e.model("tokenunify-tiny").encode(e.f(f"{k}.npz")),
        match,
        ZooError,
    )
for kind, match in (("small", "multiple of 16"), ("nan", "NaN"), ("0-1000", r"must lie in \[0, 1\]")):
    cli(
        f"volume {kind}",
        "tokenunify",
        lambda e, k=kind: ["encode", "tokenunify-tiny", e.f(f"volume-{k}.npy"), "--out", str(e.out / "t.st")],
        match,
    )
    api(
        f"volume {kind}",
        "tokenunify",
        lambda e, k=kind: e.model("tokenunify-tiny").encode(np.load(e.f(f"volume-{k}.npy"))),
        match,
        InputError,
    )
api(
    "volume tensor 0..1000",
    "tokenunify",
    lambda e: e.model("tokenunify-tiny").encode(torch.rand(1, 1, 16, 32, 80) * 1000),
    r"must lie in \[0, 1\]",
    InputError,
)
api(
    "bool volume",
    "tokenunify",
    lambda e: e.model("tokenunify-tiny").encode(np.zeros((16, 32, 80), bool)),
    "not numeric",
    InputError,
)


def _em_tokens(env: Env, tokens: Tokens) -> None:
    assert tokens.embeddings is not None and bool(torch.isfinite(tokens.embeddings).all())
    assert tokens.meta["input_size"] == [16, 32, 80]


converts(
    "uint8 volume is min-max scaled to [0, 1]",
    "tokenunify",
    "api",
    lambda e: e.model("tokenunify-tiny").encode(np.load(e.f("volume-uint8.npy"))),
    _em_tokens,
)
converts(
    "uint8 volume is min-max scaled to [0, 1]",
    "tokenunify",
    "cli",
    lambda e: ["encode", "tokenunify-tiny", e.f("volume-uint8.npy"), "--out", str(e.out / "t.safetensors")],
)


# ---- fixtures and the tests --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    files = make_files(tmp_path_factory.mktemp("bad-inputs"))
    return files, save_small_models(tmp_path_factory.mktemp("small-models"))


@pytest.fixture
def env(shared, tmp_path) -> Env:
    files, folders = shared
    return Env(files, folders, tmp_path)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _ids(cases: list[Case]) -> list[str]:
    return [f"{c.family}-{c.id}" for c in cases]


API_ERRORS = [c for c in CASES if c.surface == "api" and c.outcome == "error"]
CLI_ERRORS = [c for c in CASES if c.surface == "cli" and c.outcome == "error"]
API_CONVERSIONS = [c for c in CASES if c.surface == "api" and c.outcome == "conversion"]
CLI_CONVERSIONS = [c for c in CASES if c.surface == "cli" and c.outcome == "conversion"]


@pytest.mark.parametrize("case", API_ERRORS, ids=_ids(API_ERRORS))
def test_the_python_api_refuses_a_bad_input_with_an_error_naming_it(case, env):
    with pytest.raises(case.error, match=case.match) as caught:
        case.run(env)
    assert isinstance(caught.value, ZooError), f"{type(caught.value).__name__} is not a tokenzoo error"
    assert listing(env.tmp) == set()


@pytest.mark.parametrize("case", CLI_ERRORS, ids=_ids(CLI_ERRORS))
def test_the_cli_exits_2_naming_a_bad_input_and_writes_nothing(case, env, capsys):
    from zoo.cli import main

    argv = case.run(env)
    before = listing(env.tmp)
    capsys.readouterr()
    code = main(argv)  # an exception escaping main is the traceback a user would see
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"tokenzoo {argv[0]}: error: " in err and re.search(case.match, err), err
    assert "Traceback" not in err
    assert listing(env.tmp) == before  # nothing half-written, no temporary files left


@pytest.mark.parametrize("case", API_CONVERSIONS, ids=_ids(API_CONVERSIONS))
def test_the_python_api_converts_an_odd_but_valid_input_as_documented(case, env):
    result = case.run(env)
    assert isinstance(result, Tokens)
    if case.check is not None:
        case.check(env, result)


@pytest.mark.parametrize("case", CLI_CONVERSIONS, ids=_ids(CLI_CONVERSIONS))
def test_the_cli_converts_an_odd_but_valid_input_as_documented(case, env, capsys):
    from zoo.cli import main

    argv = case.run(env)
    assert main(argv) == 0, capsys.readouterr().err
    tokens = Tokens.load(argv[argv.index("--out") + 1])
    assert tokens.batch_size == 1 and int(tokens.lengths[0]) >= 1
    assert tokens.meta["sources"] == [Path(argv[2]).name]


def test_the_matrix_covers_every_family_on_both_surfaces():
    for family in FAMILIES:
        for surface in ("api", "cli"):
            assert any(c.family == family and c.surface == surface for c in CASES), (family, surface)


# ---- real processes: the exit code and stderr a shell sees ---------------------------------------------
@pytest.mark.slow
def test_bad_inputs_in_a_real_shell_exit_2_without_a_traceback(shared, tmp_path):
    files, _ = shared
    commands = [
        ["encode", "byte-utf", str(files / "hello.txt"), "--out", str(tmp_path / "a.st")],
        ["encode", "flextok-tiny", str(files / "truncated.png"), "--out", str(tmp_path / "b.st")],
        ["encode", "byte-utf8", str(files / "hello.txt"), "--out", str(tmp_path / "c.st"), "--device", "gpu0"],
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "zoo.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for argv in commands
    ]
    for process, expected in zip(running, ("Did you mean: byte-utf8", "truncated", "unknown device")):
        _, err = process.communicate(timeout=180)
        assert process.returncode == 2 and expected in err and "Traceback" not in err, err
    assert listing(tmp_path) == set()


LONG_CLIP = """
import resource, sys
import numpy as np, soundfile as sf
path = sys.argv[1]
t = np.arange(600 * 16000, dtype=np.float64) / 16000
sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32), 16000)
del t
from zoo.cli import main
code = main(["encode", "s3tokenizer-tiny", path, "--out", sys.argv[2]])
print("PEAK_MIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "CODE", code)
"""


@pytest.mark.slow
def test_a_ten_minute_clip_encodes_through_the_cli_in_bounded_memory(tmp_path):
    """600 s at 16 kHz go through 30 s windows (``window_batch`` per pass): the peak stays far below what one
    60000-frame attention would take (tens of GiB); 2 GiB covers torch, the model and the 38 MB waveform."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "long.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", LONG_CLIP, str(tmp_path / "long.wav"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert "CODE 0" in result.stdout, result.stderr[-2000:]
    peak = int(re.search(r"PEAK_MIB (\d+)", result.stdout).group(1))
    assert peak < 2048, f"peak RSS {peak} MiB"
    tokens = Tokens.load(out)
    assert abs(int(tokens.lengths[0]) - 600 * tokens.meta["token_rate"]) <= tokens.meta["token_rate"]


def counts() -> dict[str, int]:
    """How many inputs the matrix tries, by outcome and surface (the figure in the issue's closing note)."""
    table: dict[str, int] = {}
    for c in CASES:
        for key in (c.outcome, f"{c.outcome}/{c.surface}", f"family {c.family}"):
            table[key] = table.get(key, 0) + 1
    table["total"] = len(CASES)
    return table


if __name__ == "__main__":
    for key, value in sorted(counts().items()):
        print(f"{key}: {value}")


# ---- "Found when tried" (issue 12, item 4): each defect, and the test that would have caught it ------------
def test_tokens_record_the_model_arch_and_codebook_that_made_them(env):
    tokens = env.model("byte-utf8").encode("hello")
    assert tokens.meta["model"] == "byte-utf8" and tokens.meta["arch"] == "byte-tokenizer"
    assert tokens.meta["codebook_size"] == env.model("byte-utf8").codebook_size
    pose = env.model("mixste-tiny").encode(np.load(env.f("clip.npy")))
    assert pose.meta["arch"] == "mixste" and "codebook_size" not in pose.meta  # continuous tokens


def test_decoding_another_models_tokens_is_refused_unless_allowed(env, capsys):
    from zoo.cli import main

    tokens = env.model("byte-utf8").encode("hello")
    with pytest.raises(TokensMismatchError, match="allow_other_model=True"):
        env.model("bpe-tiny").decode(tokens)
    assert len(env.model("bpe-tiny").decode(tokens, allow_other_model=True)) == 1  # told otherwise: decoded
    path = env.tokens_file("h.safetensors", tokens)
    assert main(["decode", "bpe-tiny", path, "--out", str(env.out)]) == 2
    assert "--force" in capsys.readouterr().err and not env.out.exists()
    assert main(["decode", "bpe-tiny", path, "--out", str(env.out), "--force"]) == 0


def test_touchtts_decodes_s3tokenizer_ids_of_its_own_codebook(env):
    """TouchTTS declares ``decodes_tokens_of = {"s3tokenizer"}``: the arch differs on purpose, the codebook must not."""
    tts = env.model("touchtts")
    s3 = Tokens(ids=torch.tensor([[1, 2, 3, 4]]), meta={"arch": "s3tokenizer", "codebook_size": tts.codebook_size})
    tts.check_origin(s3)  # no error
    with pytest.raises(TokensMismatchError, match="a 6561-token codebook, not this model's 64"):
        tts.check_origin(Tokens(ids=s3.ids, meta={"arch": "s3tokenizer", "codebook_size": 6561}))


def test_decoding_twice_into_one_folder_replaces_the_first_items_and_keeps_source_names(env, capsys):
    from zoo.cli import main

    files = []
    for name, text in (("alpha.v1.txt", "first"), ("beta.txt", "second")):
        (env.tmp / name).write_text(text, encoding="utf-8")
        files.append(str(env.tmp / name))
    assert main(["encode", "byte-utf8", *files, "--out", str(env.tmp / "two.safetensors")]) == 0
    assert main(["encode", "byte-utf8", files[0], "--out", str(env.tmp / "one.safetensors")]) == 0
    decoded = env.tmp / "decoded"
    assert main(["decode", "byte-utf8", str(env.tmp / "two.safetensors"), "--out", str(decoded)]) == 0
    assert sorted(p.name for p in decoded.glob("*.txt")) == ["alpha.v1.txt", "beta.txt"]
    assert main(["decode", "byte-utf8", str(env.tmp / "one.safetensors"), "--out", str(decoded)]) == 0
    assert sorted(p.name for p in decoded.glob("*.txt")) == ["alpha.v1.txt"]  # beta.txt of the first decode is gone
    assert (decoded / "alpha.v1.txt").read_text(encoding="utf-8") == "first"
    assert not [p for p in env.tmp.iterdir() if ".partial-" in p.name]


def test_a_dangling_symlink_and_a_symlink_loop_in_a_batch_folder_become_error_rows(env):
    from zoo.tools.batch import run

    folder = env.tmp / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text("hello", encoding="utf-8")
    os.symlink("gone.txt", folder / "dangling.txt")
    os.symlink("loop.txt", folder / "loop.txt")
    manifest = run(env.model("byte-utf8"), [str(folder)], env.tmp / "run", progress=False)
    assert manifest["rows"] == 1 and manifest["errors"] == 2
    errors = (env.tmp / "run" / "errors.jsonl").read_text(encoding="utf-8")
    assert "dangling symlink" in errors and "symlink loop" in errors


def test_tokens_repr_shows_shapes_dtypes_lengths_and_meta_keys_not_values():
    tokens = Tokens(
        ids=torch.arange(2 * 300).reshape(2, 300),
        mask=torch.arange(300)[None] < torch.tensor([[300], [7]]),
        meta={"arch": "byte-tokenizer", "num_samples": torch.tensor([1, 2])},
    )
    text = repr(tokens)
    assert "ids=int64(2, 300)" in text and "mask=bool(2, 300)" in text and "lengths=[300, 7]" in text
    assert "arch: 'byte-tokenizer'" in text and "num_samples: int64(2,)" in text
    assert "599" not in text and len(text) < 400  # no tensor values


def test_tokenzoo_list_says_whether_each_model_loads_offline(capsys):
    from zoo.cli import main

    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["byte-utf8"].endswith("bundled")
    assert rows["flextok-d12-d12-in1k"].endswith("needs download")  # a Hub repo, not in this test's cache
    assert rows["s3tokenizer-v2"].endswith("needs download + conversion")  # on the Hub, converted on first load
    assert rows["mixste-h36m-243"].endswith("needs conversion")  # off the Hub: download by hand, then convert


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE=1", "unreachable Hub"])
def test_an_official_model_offline_fails_at_once_and_says_it_is_converted(how, zoo_cache, monkeypatch):
    """Not ~25 s of retries, and not "download it once" alone: the card says the model is converted."""
    import time

    from huggingface_hub import constants

    import zoo
    from zoo.errors import OfflineError

    if how == "HF_HUB_OFFLINE=1":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.perf_counter()
    with pytest.raises(OfflineError, match=r"converted from upstream's files.*tokenzoo convert s3tokenizer-v2"):
        zoo.load("s3tokenizer-v2")
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "touchtts"])
def test_encode_takes_raw_files_in_every_family(family, env):
    """Paths (``pathlib.Path`` for text: a str is the text itself) are read by encode, as preprocess reads them."""
    m = env.model(RAW_MODELS[family])
    item = _as_item(family, env.f(SAMPLE_INPUT[family]))
    direct, through = m.encode(item), m.encode(m.preprocess([Path(env.f(SAMPLE_INPUT[family]))]))
    assert (direct.ids is None) == (through.ids is None) and direct.num_positions == through.num_positions
    if direct.ids is not None:
        assert torch.equal(direct.ids, through.ids)

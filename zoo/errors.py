"""Every error tokenzoo raises on purpose, grouped by what a caller would catch.

Each class is also the builtin a caller would naturally catch (``ValueError`` for bad input,
``FileNotFoundError`` for a missing file, ``KeyError`` for an unknown name), keeps its facts as
attributes, and its message names the thing that failed and the next step.
"""

from __future__ import annotations

from collections.abc import Iterable


class ZooError(Exception):
    """Base of all tokenzoo errors."""


class ConfigError(ZooError, ValueError):
    """A config field is missing, unknown or out of range. The message names the field."""


class InputError(ZooError, ValueError):
    """An input has the wrong shape, dtype, range or content (NaN, empty, wrong sample rate...)."""


class InputFileError(InputError, FileNotFoundError):
    """An input path cannot be read as a file: it does not exist, is a directory, is a dangling symlink or a
    symlink loop, or cannot be opened. The message names the path and which of these it is.

    ``input /data/clips is a directory, not a file (give the files inside it)``
    """

    def __init__(self, path: str, problem: str, what: str = "input"):
        self.path, self.problem, self.what = path, problem, what
        super().__init__(f"{what} {path} {problem}")

    def __str__(self) -> str:
        return self.args[0]


class TokensMismatchError(InputError):
    """Tokens are decoded by a model other than the one that made them (another model, architecture, or
    vocabulary/codebook size): the ids would mean something else. ``allow_other_model=True`` (``--force``) decodes
    them anyway.

    ``these tokens were made by byte-utf8 (arch byte-tokenizer), not bpe-tiny (arch hf-tokenizer): ...``
    """

    def __init__(self, made_by: str, decoder: str, differences: Iterable[str]):
        self.made_by, self.decoder, self.differences = made_by, decoder, list(differences)
        super().__init__(
            f"these tokens were made by {made_by}, not {decoder} ({'; '.join(self.differences)}); decoding them "
            "with another model gives a wrong result. Decode with the model that encoded them, or pass "
            "allow_other_model=True (--force at the CLI) if you know they fit."
        )


class UnknownModelError(ZooError, KeyError):
    """A model or architecture name is not in the registry.

    ``unknown model 'byte-utf'. Did you mean: byte-utf8? See `tokenzoo list` for the 1 known names; ...``
    """

    def __init__(self, name: str, known: Iterable[str] = (), kind: str = "model", hint: str = ""):
        self.name, self.kind = name, kind
        self.known = sorted(known)
        self.suggestions = close_names(name, self.known)
        did_you_mean = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        hint = hint or (
            "load a Hub repo with 'hf-hub:org/repo[@revision]' or a folder by its path."
            if kind == "model"
            else f"the known {kind} names are listed by zoo.list_archs()."
        )
        super().__init__(
            f"unknown {kind} {name!r}.{did_you_mean} See `tokenzoo list` for the {len(self.known)} known names; {hint}"
        )

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return self.args[0]


def close_names(name: str, known: Iterable[str], limit: int = 5) -> list[str]:
    """Known names that contain ``name`` (or are contained in it), then the closest spellings."""
    import difflib

    known = list(known)
    lowered = name.lower()
    close = [k for k in known if lowered in k.lower() or (k.lower() in lowered and len(k) > 2)]
    close += [k for k in difflib.get_close_matches(name, known, n=limit, cutoff=0.6) if k not in close]
    return close[:limit]


class ModelFileNotFoundError(ZooError, FileNotFoundError):
    """A file a model needs is not at its source (a folder, or a Hub repo at a revision)."""

    def __init__(self, source: str, file: str, revision: str | None = None, hint: str = ""):
        self.source, self.file, self.revision = source, file, revision
        at = f"{source}@{revision}" if revision else source
        super().__init__(f"{file} not found in {at}.{(' ' + hint) if hint else ''}")

    def __str__(self) -> str:
        return self.args[0]


class RepoNotFoundError(ZooError, FileNotFoundError):
    """A Hub repository does not exist (or is private) on the endpoint in use."""

    def __init__(self, repo_id: str, endpoint: str | None = None):
        self.repo_id, self.endpoint = repo_id, endpoint
        where = f" on {endpoint}" if endpoint else ""
        super().__init__(f"Hub repo {repo_id!r} not found{where}. Check the name, or log in if it is private.")

    def __str__(self) -> str:
        return self.args[0]


class RevisionNotFoundError(ZooError, FileNotFoundError):
    """A branch, tag or commit does not exist in a Hub repository."""

    def __init__(self, repo_id: str, revision: str, endpoint: str | None = None):
        self.repo_id, self.revision, self.endpoint = repo_id, revision, endpoint
        where = f" on {endpoint}" if endpoint else ""
        super().__init__(
            f"revision {revision!r} not found in Hub repo {repo_id!r}{where}. "
            "Use a branch, a tag or a full 40-character commit sha."
        )

    def __str__(self) -> str:
        return self.args[0]


class OfflineError(ZooError, FileNotFoundError):
    """The Hub cannot be reached (or HF_HUB_OFFLINE=1) and the files are not in the local cache.

    ``model.safetensors of hf-hub:org/repo@main is not in the local cache, and HF_HUB_OFFLINE=1 forbids
    downloading it. Download it once while online, or load a local folder.``
    """

    def __init__(self, repo_id: str, revision: str | None, file: str, reason: str = "", hint: str = ""):
        self.repo_id, self.revision, self.file = repo_id, revision, file
        self.reason = reason or "the Hub cannot be reached"
        self.hint = hint or "Download it once while online, or load a local folder."
        super().__init__(
            f"{file} of hf-hub:{repo_id}@{revision or 'main'} is not in the local cache, and {self.reason}. {self.hint}"
        )

    def __str__(self) -> str:
        return self.args[0]


class CorruptFileError(ZooError, ValueError):
    """A weight or token file is truncated, corrupted or not what its name says. Nothing of it is kept."""

    def __init__(self, file: str, reason: str, source: str | None = None):
        self.file, self.reason, self.source = file, reason, source
        at = f" from {source}" if source else ""
        super().__init__(f"{file}{at} is corrupt: {reason}. It was not loaded; download or write it again.")


class UnsafeFormatError(ZooError, ValueError):
    """A pickle-based checkpoint (.bin, .pt, .pth, .ckpt) was offered where only safetensors is accepted.

    Pickles can run code when they are opened, so tokenzoo never opens one outside ``convert.py``.
    """

    def __init__(self, file: str, source: str | None = None):
        self.file, self.source = file, source
        at = f" in {source}" if source else ""
        super().__init__(
            f"{file}{at} is a pickle-based checkpoint; tokenzoo loads safetensors only and did not open it. "
            "Convert it once with `tokenzoo convert ARCH CKPT --out DIR`."
        )


class CheckpointMismatchError(ZooError, ValueError):
    """The weights do not fit the architecture their config.json describes. Never loaded leniently."""

    def __init__(self, model: str, file: str, missing=(), unexpected=(), mismatched=(), source: str | None = None):
        self.model, self.file, self.source = model, file, source
        self.missing, self.unexpected = sorted(missing), sorted(unexpected)
        self.mismatched = sorted(mismatched)  # "key: checkpoint (..) vs model (..)"
        problems = [
            f"  {kind} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for kind, keys in (
                ("missing", self.missing),
                ("unexpected", self.unexpected),
                ("wrong shape", self.mismatched),
            )
            if keys
        ]
        at = f" at {source}" if source else ""
        super().__init__(
            "\n".join(
                [
                    f"{model}: {file}{at} does not fit its config",
                    *problems,
                    "  Upstream checkpoint? Convert it first: tokenzoo convert ARCH CKPT --out DIR",
                ]
            )
        )


class NotSupportedError(ZooError, NotImplementedError):
    """A model does not offer an operation (for example decode on an encoder-only tokenizer)."""


class NotWeightsOnlyError(ZooError, ValueError):
    """A pickle checkpoint needs Python classes or functions beyond tensors, containers and the few extras
    its converter allows; ``torch.load(weights_only=True)`` refuses to build them, and so does tokenzoo.

    ``model.pth is not a weights-only file: unpickling it needs builtins.exec, which tokenzoo does not allow
    (allowed beyond tensors and containers: argparse.Namespace). ...``
    """

    def __init__(self, file: str, needed: Iterable[str], allowed: Iterable[str] = (), source: str | None = None):
        self.file, self.source = file, source
        self.needed, self.allowed = sorted(set(needed)), sorted(set(allowed))
        at = f" from {source}" if source else ""
        needs = ", ".join(self.needed) or "Python objects other than tensors"
        extras = ", ".join(self.allowed) or "nothing"
        super().__init__(
            f"{file}{at} is not a weights-only file: unpickling it needs {needs}, which tokenzoo does not allow "
            f"(allowed beyond tensors and containers: {extras}). Unpickling other globals can run code, so the "
            "file was not opened further; save its state_dict alone (torch.save(model.state_dict(), ...)) "
            "or as safetensors and convert that."
        )


class ChecksumMismatchError(CorruptFileError):
    """A downloaded upstream file does not have the sha256 its card records; it was not converted."""

    def __init__(self, file: str, expected: str, actual: str, source: str | None = None):
        self.expected, self.actual = expected, actual
        super().__init__(
            file,
            f"its sha256 is {actual} but the card expects {expected} (a different release, or a damaged download)",
            source=source,
        )


class OffHubWeightsError(ModelFileNotFoundError):
    """An official model whose upstream files live off the Hugging Face Hub: tokenzoo cannot fetch them, so
    the message gives the download location and the exact command that converts the downloaded file."""

    def __init__(self, model: str, file: str, where: str, command: str):
        self.model, self.where, self.command = model, where, command
        super().__init__(
            model,
            file,
            hint=(
                f"{model}'s weights are not on the Hugging Face Hub, so tokenzoo cannot fetch them. "
                f"Download {file} from {where}, then convert it once with\n    {command}\n"
                f"after which zoo.load({model!r}) loads the converted copy."
            ),
        )


class FixtureKeyError(ZooError, KeyError):
    """A parity test read a tensor its fixture's config.json does not describe, or one it describes but the
    file lacks. Tests take every key from the fixture's own description, never from the public set.

    ``io.safetensors of .../tokenunify/pretext has no described key 'rt2.input' (config.json describes 26 keys:
    ar.input, ar.k, ...). Take key names from the fixture's config.json.``
    """

    def __init__(self, key: str, file: str, problem: str, described=()):
        self.key, self.file, self.problem = key, file, problem
        self.described = sorted(described)
        shown = ", ".join(self.described[:12]) + (" ..." if len(self.described) > 12 else "")
        super().__init__(
            f"{file}: {problem} {key!r} (config.json describes {len(self.described)} keys: {shown}). "
            "Take key names from the fixture's config.json."
        )

    def __str__(self) -> str:
        return self.args[0]

"""Input readers for the tools: files, folders, globs and ``@list`` files -> an ordered list of paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from zoo.errors import InputError


def resolve_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike) -> list[str]:
    """Files, folders (every file inside, recursively), globs and ``@list`` files -> paths, in order.

    A path that does not exist is kept (it becomes an error record of the run, not a crash); a glob
    that matches nothing is an InputError, as it is almost always a typo. Duplicates are dropped, the
    first mention wins.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[str] = []
    for entry in inputs:
        text = os.fspath(entry)
        if text.startswith("@"):
            list_file = Path(text[1:])
            if not list_file.is_file():
                raise InputError(f"list file {list_file} does not exist")
            lines = [ln.strip() for ln in list_file.read_text(encoding="utf-8").splitlines()]
            for line in lines:
                if line and not line.startswith("#"):
                    path = Path(line) if Path(line).is_absolute() else list_file.parent / line
                    found.append(os.fspath(path))
        elif Path(text).is_dir():
            found.extend(
                os.fspath(p)
                for p in sorted(Path(text).rglob("*"))
                # a dangling symlink or a symlink loop is kept: it becomes an error row, not a silent gap
                if (p.is_file() or (p.is_symlink() and not p.exists()))
                and not any(part.startswith(".") for part in p.relative_to(text).parts)
            )
        elif not Path(text).exists() and glob.has_magic(text):
            matches = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"the pattern {text!r} matches no files")
            found.extend(matches)
        else:
            found.append(text)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InputError("no inputs: give files, folders, globs or @list files")
    return unique

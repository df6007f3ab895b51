"""The ``tokenzoo`` command: list, info, encode, decode, convert, publish, demo, and the usage tools.

Every command exits 0 on success, 2 on a problem with what it was given (unknown model, missing
file, bad input: the message names it), and 1 on anything unexpected.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path

# Subcommands that live beside the tool they drive: name -> ("module:function" adding its subparser, its help).
# A tool's module is imported only when its command runs (or shows its own --help): the tools import torch,
# accelerate and gradio, which take seconds, and `tokenzoo --help` needs none of them. Each help line here
# is the one the tool's add_cli declares (tests/test_cli_startup.py keeps the two equal).
PLUGIN_COMMANDS = {
    "batch": (
        "zoo.tools.batch:add_cli",
        "tokenize many files into Parquet shards (resumable; runs under accelerate launch)",
    ),
    "finetune": (
        "zoo.tools.finetune:add_cli",
        "fine-tune a model through its training_loss with accelerate (resumable)",
    ),
    "compare": (
        "zoo.tools.compare:add_cli",
        "the same inputs through several models of one modality: one table (Markdown + JSON)",
    ),
    "app": ("demos.app:add_cli", "start the Gradio demo on 127.0.0.1"),
}


def load_model(args: argparse.Namespace):
    import zoo
    from zoo.tools.options import model_options

    return zoo.load(args.model, **model_options(args))


# ---- commands -----------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from zoo.cards import card_license
    from zoo.registry import availability, card_data, list_models

    names = list_models(args.pattern, modality=args.modality)
    if args.json:
        rows = [{"name": n, "availability": availability(n), **card_data(n)} for n in names]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    header = ("name", "arch", "modality", "license", "availability")
    rows = [
        (n, (d := card_data(n)).get("arch", ""), d.get("modality", ""), card_license(d), availability(n)) for n in names
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from zoo.errors import UnknownModelError
    from zoo.registry import _card_folders

    folders = _card_folders()
    if args.model not in folders:
        raise UnknownModelError(args.model, folders)
    print((folders[args.model] / "README.md").read_text())
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from zoo.api import check_input_file, check_output_file, is_tokens_file

    paths = [check_input_file(p, "input file") for p in args.inputs]
    out = check_output_file(args.out, "--out")
    if out.is_file() and not is_tokens_file(out):
        from zoo.errors import InputError

        raise InputError(f"--out {out} exists and is not a tokens file; not overwriting it (choose another name)")
    model = load_model(args)
    tokens = model.encode(model.preprocess(paths))
    tokens.meta.setdefault("model", args.model)
    tokens.meta["sources"] = [p.name for p in paths]  # decode names its files after these
    tokens.save(out)
    print(f"{out}: {tokens.batch_size} items, {tokens.num_positions} positions, lengths {tokens.lengths.tolist()}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from zoo.api import Tokens, check_input_file, check_output_dir

    tokens_path = check_input_file(args.tokens, "tokens file")
    out = check_output_dir(args.out, "--out")
    _check_replaceable(out)
    model = load_model(args)
    tokens = Tokens.load(tokens_path).to(model.device)
    outputs = model.postprocess(model.decode(tokens, allow_other_model=args.force))
    written = write_outputs(outputs, out, names=tokens.meta.get("sources"))
    print("\n".join(str(p) for p in written))
    return 0


DECODED_MARKER = ".tokenzoo-decoded"  # in a folder `tokenzoo decode` wrote; a new decode there replaces it


def _check_replaceable(out: Path) -> None:
    """A decode writes a new folder, or replaces an empty one or one an earlier decode wrote (so no old
    items stay beside the new); any other folder is refused, never emptied."""
    from zoo.errors import InputError

    if out.is_dir() and any(out.iterdir()) and not (out / DECODED_MARKER).is_file():
        raise InputError(
            f"--out {out} holds files tokenzoo decode did not write; choose a new or empty folder "
            "(a folder an earlier decode wrote is replaced)"
        )


def write_outputs(outputs, out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Write decoded items as files into ``out_dir``, replacing what an earlier decode wrote there: text ->
    .txt, PIL images -> .png, (waveform, sample_rate) pairs -> .wav, arrays/tensors -> .npy. Files are
    named after ``names`` (the input files' names, stem kept) when there is one per item, else item0000...
    All files are written into a hidden folder first and moved into place together."""
    import shutil
    import tempfile

    import numpy as np
    import torch
    from PIL import Image

    outputs = list(outputs)
    out_dir = out_dir.resolve()  # "." and symlinked folders: replace the real folder, from its parent
    stems = [f"item{i:04d}" for i in range(len(outputs))]
    if isinstance(names, list) and len(names) == len(outputs):
        stems = [Path(str(n)).stem or stems[i] for i, n in enumerate(names)]
        if len(set(stems)) < len(stems):  # two inputs of one name in different folders
            stems = [f"{stem}-{i}" for i, stem in enumerate(stems)]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        written = []
        for stem, item in zip(stems, outputs):
            if isinstance(item, str):
                path = staging / f"{stem}.txt"  # not with_suffix: "v1.2.txt" keeps its stem "v1.2"
                path.write_text(item, encoding="utf-8")
            elif isinstance(item, Image.Image):
                path = staging / f"{stem}.png"
                item.save(path)
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int):
                import soundfile

                path = staging / f"{stem}.wav"
                soundfile.write(path, np.asarray(item[0]), item[1])
            else:
                path = staging / f"{stem}.npy"
                np.save(path, item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item))
            written.append(out_dir / path.name)
        (staging / DECODED_MARKER).write_text("".join(p.name + "\n" for p in written), encoding="utf-8")
        _check_replaceable(out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def parse_assignments(items: list[str] | None, what: str) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> a dict; a malformed item is an ArgumentTypeError naming it."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{what} {item!r} must look like KEY=VALUE")
        out[key.replace("-", "_")] = value
    return out


def _option_value(text: str):
    """A converter option's value: JSON where it parses (3, 2.5, true, [16, 160, 160]), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_convert(args: argparse.Namespace) -> int:
    """By arch (``--out DIR``): the family's converter writes a folder. By an official model's name (no
    ``--out``): the card's recipe converts downloaded copies of its upstream files into the tokenzoo cache."""
    from zoo.errors import ConfigError, ModelFileNotFoundError, UnknownModelError
    from zoo.registry import CONVERTERS, _card_folders, card_data

    options = {k: _option_value(v) for k, v in parse_assignments(args.option, "--option").items()}
    files = {k: Path(v) for k, v in parse_assignments(args.file, "--file").items()}
    if args.vit:
        files["vit"] = Path(args.vit)
    folders = _card_folders()
    official = args.arch in folders and bool(card_data(args.arch).get("upstream_files"))
    by_name = official and args.out is None
    if not by_name and args.arch not in CONVERTERS:
        hint = (
            f" ({args.arch} is an official model: drop --out to convert it into the tokenzoo cache)" if official else ""
        )
        raise UnknownModelError(args.arch, CONVERTERS, kind="architecture with a converter", hint=hint)
    if by_name and options:
        raise ConfigError(
            f"{args.arch}'s card fixes the converter and its options; to choose your own, convert by arch "
            f"(tokenzoo convert {card_data(args.arch)['converter']} CKPT --out DIR --option ...)"
        )
    if args.checkpoint is None and not by_name:
        raise ConfigError(f"tokenzoo convert {args.arch} needs the CHECKPOINT to convert")
    if args.checkpoint is not None:
        files = {None: Path(args.checkpoint), **files}
    for path in files.values():
        if not path.exists():
            raise ModelFileNotFoundError(str(path.resolve().parent), path.name, hint="No such checkpoint.")
    if not by_name and not args.out:
        raise ConfigError(f"tokenzoo convert {args.arch} needs --out DIR (the folder to write)")
    for path in files.values():
        if path.is_file():
            check_checkpoint_file(path)
    if by_name:
        from zoo.official import convert_local_files

        out = convert_local_files(args.arch, card_data(args.arch), files, card=folders[args.arch] / "README.md")
        print(f"converted {args.arch} into {out}; zoo.load({args.arch!r}) now loads it")
        return 0
    module_name, function_name = CONVERTERS[args.arch].split(":")
    convert = getattr(importlib.import_module(module_name), function_name)
    source = files.pop(None)
    out = convert(args.arch, source, Path(args.out), **options, **files)
    print(f"wrote {out}; load it with zoo.load({str(out)!r})")
    return 0


def check_checkpoint_file(path: Path) -> None:
    """An upstream checkpoint given to convert must be what its bytes say: a safetensors file (named so or not)
    or a torch pickle (.pt/.pth/.bin/.ckpt, opened weights-only by the converter); ONNX graphs (.onnx, the
    S3Tokenizer releases) are left to their converter. Anything else, or a pickle named .safetensors, is an
    InputError naming the file and what it is."""
    from zoo.errors import CorruptFileError, InputError
    from zoo.files import PICKLE_MAGICS
    from zoo.hub import read_safetensors_header

    if path.suffix == ".onnx":
        return
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(PICKLE_MAGICS):
        if path.suffix == ".safetensors":
            raise InputError(
                f"checkpoint {path} is named .safetensors but holds a torch pickle (torch.save); rename it to "
                "what it is (.pt or .pth) and convert that, which opens it weights-only"
            )
        return
    try:
        read_safetensors_header(path)
    except CorruptFileError as err:
        raise InputError(
            f"checkpoint {path} is neither a safetensors file nor a torch checkpoint ({err.reason}); "
            "give the upstream weights file"
        ) from err


def cmd_publish(args: argparse.Namespace) -> int:
    from zoo.tools.publish import publish

    commit = publish(args.model, args.repo, private=args.private, revision=args.revision)
    print(f"pushed {args.model} to hf-hub:{args.repo}@{commit}; load it with zoo.load('hf-hub:{args.repo}')")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from zoo.tools.demo import main as demo_main

    return demo_main(Path(args.out))


def _installed(module_name: str) -> bool:
    """Whether a tool's module is part of this installation (found without importing it)."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # its parent package (demos) is not installed
        return False


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``tokenzoo`` parser. Only the tool behind ``command`` (the subcommand about to run) is imported
    and adds its full subparser; the other tools are listed by name and help, so building the parser
    imports neither torch nor any family."""
    from zoo.files import MODALITIES
    from zoo.tools.options import add_model_options

    parser = argparse.ArgumentParser(prog="tokenzoo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "list",
        help="list registered models and whether each loads offline (bundled, cached) or needs a download or "
        "a conversion first",
    )
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'flextok*'")
    p.add_argument("--modality", choices=MODALITIES)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="print a model's card")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("encode", help="encode input files into a tokens file (safetensors)")
    p.add_argument("model")
    p.add_argument("inputs", nargs="+", help="input files (text, images, audio, keypoints, volumes)")
    p.add_argument("--out", required=True, help="tokens file to write, e.g. tokens.safetensors")
    add_model_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a tokens file into output files")
    p.add_argument("model")
    p.add_argument("tokens", help="tokens file written by `tokenzoo encode`")
    p.add_argument("--out", required=True, help="folder for the decoded items (replaced if a decode wrote it)")
    p.add_argument(
        "--force", action="store_true", help="decode tokens another model made (refused by default: wrong results)"
    )
    add_model_options(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser(
        "convert",
        help="convert an upstream checkpoint into a zoo model folder (by arch), or into the cache (by model name)",
    )
    p.add_argument("arch", help="an arch with a converter (with --out), or an official model's name (without --out)")
    p.add_argument("checkpoint", nargs="?", help="the upstream file (by name: omit it if the card fetches it)")
    p.add_argument("--out", help="the folder to write (by arch)")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a converter option, e.g. prune_before_block=3 (HoT's --layer_index) or variant=v1_25hz; repeatable",
    )
    p.add_argument(
        "--file",
        action="append",
        metavar="OPTION=PATH",
        help="a further upstream file the converter takes, e.g. vit=...",
    )
    p.add_argument(
        "--vit", default=None, metavar="PATH", help="the same as --file vit=PATH (SEED: LAVIS's eva_vit_g.pth)"
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("publish", help="(maintainers) convert an official model and push it to a Hub repo")
    p.add_argument("model", help="an official model's name (its card names the upstream files)")
    p.add_argument("--repo", required=True, metavar="ORG/NAME")
    p.add_argument("--revision", default=None, help="branch to push to (default main)")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("demo", help="run every bundled model on bundled samples and print one table")
    p.add_argument("--out", default="out")
    p.set_defaults(func=cmd_demo)

    for name, (target, help_text) in PLUGIN_COMMANDS.items():
        module_name, function_name = target.split(":")
        if not _installed(module_name):
            continue  # that tool is not part of this installation
        if name == command:
            getattr(importlib.import_module(module_name), function_name)(sub)
        else:
            sub.add_parser(name, help=help_text)  # listed in --help; never parses arguments
    return parser


def main(argv: list[str] | None = None) -> int:
    from zoo.errors import ZooError

    argv = sys.argv[1:] if argv is None else list(argv)
    # The only option before the subcommand is a flag (-v), so the first word that is not an option names it.
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ZooError, FileNotFoundError, argparse.ArgumentTypeError) as err:
        print(f"tokenzoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as err:
        # a path the checks above could not foresee (a read-only mount, a race): named, not a traceback
        print(f"tokenzoo {args.command}: error: cannot use {err.filename or 'a path'}: {err.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``tokenzoo`` command: list, info, encode, decode, convert, demo, and the usage tools.

Every command exits 0 on success, 2 on a problem with what it was given (unknown model, missing
file, bad input: the message names it), and 1 on anything unexpected.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

# Subcommands that live beside the feature they drive: "module:function" adding a subparser.
PLUGIN_COMMANDS = ("zoo.batch:add_cli", "zoo.finetune:add_cli", "zoo.compare:add_cli", "demos.app:add_cli")

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def _dtype(name: str | None):
    import torch

    if name is None:
        return None
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; choose one of {', '.join(sorted(DTYPES))}")
    return getattr(torch, DTYPES[name])


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype, --revision, --local-files-only: how every command that loads a model takes them."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="weights dtype (default: as stored)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit sha")
    parser.add_argument("--local-files-only", action="store_true", help="use the Hub cache only")


def load_model(args: argparse.Namespace):
    import zoo

    return zoo.load(
        args.model,
        device=args.device,
        dtype=_dtype(args.dtype),
        revision=args.revision,
        local_files_only=args.local_files_only,
    )


# ---- commands -----------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from zoo.cards import card_license
    from zoo.registry import card_data, list_models

    names = list_models(args.pattern, modality=args.modality)
    if args.json:
        print(json.dumps([{"name": n, **card_data(n)} for n in names], indent=2, default=str))
        return 0
    rows = [(n, (d := card_data(n)).get("arch", ""), d.get("modality", ""), card_license(d)) for n in names]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(("name", "arch", "modality", "license"))]
    for row in [("name", "arch", "modality", "license"), *rows]:
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
    from zoo.errors import ModelFileNotFoundError

    paths = [Path(p) for p in args.inputs]
    for path in paths:
        if not path.is_file():
            raise ModelFileNotFoundError(str(path.resolve().parent), path.name, hint="No such input file.")
    model = load_model(args)
    tokens = model.encode(model.preprocess(paths))
    tokens.meta.setdefault("model", args.model)
    tokens.save(args.out)
    print(f"{args.out}: {tokens.batch_size} items, {tokens.num_positions} positions, lengths {tokens.lengths.tolist()}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from zoo.api import Tokens

    model = load_model(args)
    tokens = Tokens.load(args.tokens).to(model.device)
    outputs = model.postprocess(model.decode(tokens))
    written = write_outputs(outputs, Path(args.out))
    print("\n".join(str(p) for p in written))
    return 0


def write_outputs(outputs, out_dir: Path) -> list[Path]:
    """Write decoded items as files: text -> .txt, PIL images -> .png, arrays/tensors -> .npy,
    (waveform, sample_rate) pairs -> .wav."""
    import numpy as np
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, item in enumerate(outputs):
        path = out_dir / f"item{i:04d}"
        if isinstance(item, str):
            path = path.with_suffix(".txt")
            path.write_text(item, encoding="utf-8")
        elif hasattr(item, "save") and hasattr(item, "mode"):  # PIL.Image
            path = path.with_suffix(".png")
            item.save(path)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int):
            import soundfile

            path = path.with_suffix(".wav")
            soundfile.write(path, np.asarray(item[0]), item[1])
        else:
            path = path.with_suffix(".npy")
            np.save(path, item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item))
        written.append(path)
    return written


def cmd_convert(args: argparse.Namespace) -> int:
    from zoo.errors import ModelFileNotFoundError, UnknownModelError
    from zoo.registry import CONVERTERS

    if args.arch not in CONVERTERS:
        raise UnknownModelError(args.arch, CONVERTERS, kind="architecture with a converter")
    source = Path(args.checkpoint)
    if not source.exists():
        raise ModelFileNotFoundError(str(source.resolve().parent), source.name, hint="No such checkpoint.")
    module_name, function_name = CONVERTERS[args.arch].split(":")
    convert = getattr(importlib.import_module(module_name), function_name)
    options = {"vit": Path(args.vit)} if args.vit else {}
    out = convert(args.arch, source, Path(args.out), **options)
    print(f"wrote {out}; load it with zoo.load({str(out)!r})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from zoo.demo import main as demo_main

    return demo_main(Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenzoo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'flextok*'")
    p.add_argument("--modality", choices=["text", "image", "audio", "pose", "em_volume"])
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
    p.add_argument("--out", required=True, help="folder for the decoded items")
    add_model_options(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("convert", help="convert an upstream checkpoint into a zoo model folder")
    p.add_argument("arch")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--vit", default=None, help="a ViT checkpoint released apart (SEED: LAVIS eva_vit_g.pth)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="run every bundled model on bundled samples and print one table")
    p.add_argument("--out", default="out")
    p.set_defaults(func=cmd_demo)

    for target in PLUGIN_COMMANDS:
        module_name, function_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is None or not module_name.startswith(err.name):
                raise  # a missing dependency inside the tool is a real error
            continue  # that tool is not part of this installation
        getattr(module, function_name)(sub)
    return parser


def module_main(command: str, add_cli, argv: list[str] | None = None) -> int:
    """``python -m zoo.<command> ARGS`` (what ``accelerate launch -m zoo.<command>`` runs): one subcommand alone."""
    parser = argparse.ArgumentParser(prog=f"python -m zoo.{command}")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    from zoo.errors import ZooError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ZooError, FileNotFoundError, argparse.ArgumentTypeError) as err:
        print(f"tokenzoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What every subcommand that loads a model shares: one dtype table, one set of model options, and the
accelerate process state the multi-process tools (batch, finetune) join.

``--device``, ``--dtype`` and ``--revision`` mean the same everywhere: where the model runs, the
floating dtype its weights are cast to, and the Hub branch, tag or commit sha it is loaded from.
"""

from __future__ import annotations

import argparse
from typing import Any

# Every spelling a user may type -> the torch dtype's name.
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def parse_dtype(name: str | None):
    """A dtype spelling from ``DTYPES`` -> the torch dtype (None stays None: weights as stored)."""
    import torch

    if name is None:
        return None
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; choose one of {', '.join(sorted(DTYPES))}")
    return getattr(torch, DTYPES[name])


def add_model_options(parser: argparse.ArgumentParser, device_help: str = "cpu, cuda, cuda:1 ... (default: cpu)"):
    """--device, --dtype, --revision, --local-files-only: how every command that loads a model takes them."""
    parser.add_argument("--device", default=None, help=device_help)
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="weights dtype (default: as stored)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit sha to load the model from")
    parser.add_argument("--local-files-only", action="store_true", help="use the Hub cache only")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``zoo.load`` keyword arguments the options of ``add_model_options`` stand for."""
    return {
        "device": args.device,
        "dtype": parse_dtype(args.dtype),
        "revision": args.revision,
        "local_files_only": args.local_files_only,
    }


def process_state(cpu: bool = False):
    """accelerate's PartialState, on CPU processes when asked, when ACCELERATE_USE_CPU=1, or without CUDA.

    PartialState alone ignores ACCELERATE_USE_CPU (only Accelerator reads it), and on a machine
    without CUDA it would then not join the processes ``accelerate launch --multi_gpu`` started.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def module_main(command: str, add_cli, argv: list[str] | None = None) -> int:
    """``python -m zoo.tools.<command> ARGS`` (what ``accelerate launch -m zoo.tools.<command>`` runs): one
    subcommand alone, with the CLI's error handling (exit code 2 and a message for a bad input)."""
    import logging
    import sys

    from zoo.errors import ZooError

    parser = argparse.ArgumentParser(prog=f"python -m zoo.tools.{command}")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ZooError, FileNotFoundError, argparse.ArgumentTypeError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2

"""The tokenzoo demo: one Gradio Blocks app with a tab per modality that has registered models.

    python -m demos.app --port 7860          # or: make app / tokenzoo app
    open http://127.0.0.1:7860

Each tab comes from ``demos/tabs/<modality>.py:build(models)`` (see :mod:`demos.tabs`); a modality
without its own builder gets the generic upload-and-encode tab. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

import gradio as gr

from zoo.files import MODALITIES

logger = logging.getLogger(__name__)

TAB_TITLES = {"text": "Text", "image": "Image", "audio": "Audio", "pose": "Pose", "em_volume": "EM volume"}
HOST = "127.0.0.1"


def registered_models() -> dict[str, list[str]]:
    """Registered models whose files are bundled (loadable offline), per modality that has any."""
    from zoo.registry import bundled_models

    found = {m: bundled_models(m) for m in MODALITIES}
    return {m: names for m, names in found.items() if names}


def tab_builder(modality: str) -> Callable[[list[str]], None]:
    """``demos.tabs.<modality>.build``, or the generic tab when the family has not written one."""
    module_name = f"demos.tabs.{modality}"
    try:
        return importlib.import_module(module_name).build
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
    from demos.tabs.generic import make_builder

    return make_builder(modality)


def build_app(models: dict[str, list[str]] | None = None) -> gr.Blocks:
    """The Blocks app with one tab per modality in ``models`` (default: every registered model)."""
    models = registered_models() if models is None else models
    with gr.Blocks(title="tokenzoo") as app:
        gr.Markdown(
            "# tokenzoo\nOne registry, one contract: `encode(x) -> Tokens`, `decode(Tokens) -> x`, "
            "for text, images, speech, poses and EM volumes."
        )
        if not models:
            gr.Markdown("No models are registered (hub_cards/ is empty).")
        for modality in MODALITIES:
            if models.get(modality):
                with gr.Tab(TAB_TITLES[modality], id=modality):
                    tab_builder(modality)(list(models[modality]))
    return app


def launch(models: dict[str, list[str]] | None = None, port: int | None = None, block: bool = True) -> gr.Blocks:
    """Start the app on 127.0.0.1 (``port`` None: the first free one from 7860). Returns the app."""
    app = build_app(models)
    app.launch(server_name=HOST, server_port=port, prevent_thread_lock=not block, quiet=not block)
    return app


def add_cli(subparsers) -> None:
    """Add ``app`` to a ``tokenzoo`` argparse subparsers object."""
    p = subparsers.add_parser("app", help="start the Gradio demo on 127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    launch(port=args.port, block=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.app")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["app", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

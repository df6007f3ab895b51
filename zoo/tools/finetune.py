"""Fine-tune any zoo model through its ``training_loss``: ``tokenzoo finetune MODEL --data ... --out DIR``.

One accelerate loop serves every family whose class declares ``supports_training``: it supplies
``training_loss(batch) -> scalar`` and, where the defaults do not fit, the hooks ``zoo.api.ZooModel``
declares (``load_item``, ``training_batch``, ``evaluate``).

The loop, in order:
- Data: files (paths, folders, globs, ``@list`` files) -> ``load_item`` -> held in memory. Each epoch
  visits them in the order of a permutation seeded by ``seed + epoch``; optimizer step t uses global
  micro-batches (t-1)*A .. t*A-1 (A = gradient accumulation) of ``batch_size`` items. With P processes
  each takes its 1/P slice of every micro-batch, and DDP averages the gradients, so P processes take
  the same steps as one (within float rounding).
- Mixed precision: ``bf16`` on a CUDA device that supports it, else none (``mixed_precision=`` overrides).
- Every ``save_every`` steps ``Accelerator.save_state`` writes ``checkpoints/step-NNNNNN`` (weights,
  optimizer, RNG states); ``resume=True`` restarts from the newest complete one and, since the data
  order is a function of the step, continues bit for bit on CPU.
- Every ``eval_every`` steps (and at the end) the family's ``evaluate`` runs on held-out items
  (``eval_data``, else the last tenth of ``data`` when there are at least ten items).
- The result is a zoo model folder ``out/model`` whose card names the base model and the revision it
  was loaded at (the Hub commit sha, or the sha256 of a local model's weights), data, steps and the
  final metric with its protocol. ``log.jsonl`` holds the losses and evaluations.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.api import ZooModel
from zoo.errors import ConfigError, InputError, NotSupportedError
from zoo.files import atomic_write
from zoo.tools.batch import model_identity
from zoo.tools.inputs import resolve_inputs
from zoo.tools.options import add_model_options, model_options, process_state

logger = logging.getLogger(__name__)

RUN_NAME = "run.json"
LOG_NAME = "log.jsonl"
CHECKPOINTS = "checkpoints"
DONE_NAME = "tokenzoo-checkpoint.json"


class TrainingLoss(nn.Module):
    """Wraps a model so ``forward(batch)`` is its ``training_loss``: DDP syncs gradients only through forward."""

    def __init__(self, model: ZooModel):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.training_loss(batch)


def micro_batch_indices(micro_step: int, batch_size: int, num_items: int, seed: int) -> list[int]:
    """Item indices of global micro-batch ``micro_step``: a window on the seeded per-epoch permutations."""
    positions = range(micro_step * batch_size, (micro_step + 1) * batch_size)
    return [_epoch_order(seed, j // num_items, num_items)[j % num_items] for j in positions]


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, num_items: int) -> tuple[int, ...]:
    return tuple(torch.randperm(num_items, generator=torch.Generator().manual_seed(seed + epoch)).tolist())


def default_mixed_precision() -> str:
    """bf16 where a CUDA device supports it; plain fp32 elsewhere (CPU autocast is slower than it saves here)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _load_items(model: ZooModel, paths: list[str]) -> list[Any]:
    items = []
    for path in paths:
        try:
            items.append(model.load_item(path))
        except Exception as err:
            raise InputError(f"cannot read training input {path}: {err}") from err
    return items


def _latest_checkpoint(out: Path) -> Path | None:
    complete = sorted(p for p in (out / CHECKPOINTS).glob("step-*") if (p / DONE_NAME).is_file())
    return complete[-1] if complete else None


def finetune(
    model: str | os.PathLike | ZooModel,
    data: Sequence[str | os.PathLike] | str,
    out_dir: str | os.PathLike,
    *,
    eval_data: Sequence[str | os.PathLike] | str | None = None,
    steps: int = 100,
    batch_size: int = 8,
    grad_accum: int = 1,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    mixed_precision: str | None = None,
    eval_every: int = 50,
    save_every: int = 50,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    cpu: bool = False,
    progress: bool = True,
    name: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``data`` and save the result under ``out_dir/model``; return a summary.

    ``dtype``, ``revision`` and ``local_files_only`` are ``zoo.load``'s. The device is the one
    accelerate assigns each process; ``device="cpu"`` is ``cpu=True``, any other device must be that one.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env, set_seed
    from tqdm.auto import tqdm

    import zoo

    if steps < 1 or batch_size < 1 or grad_accum < 1 or eval_every < 1 or save_every < 1:
        raise ConfigError("steps, batch_size, grad_accum, eval_every and save_every must all be >= 1")
    cpu = cpu or (device is not None and torch.device(device).type == "cpu")
    cpu = cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    mixed_precision = mixed_precision or ("no" if cpu else default_mixed_precision())
    process_state(cpu=cpu)  # join the launched processes first, on CPU where asked
    # A second run in one Python process may change precision or accumulation; the process group stays.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size {batch_size} must divide evenly among {accelerator.num_processes} processes")
    if device is not None and torch.device(device).type != "cpu" and torch.device(device) != accelerator.device:
        raise ConfigError(
            f"finetune runs on the device accelerate assigns ({accelerator.device}), not {device}; "
            "choose GPUs with accelerate launch (or CUDA_VISIBLE_DEVICES)"
        )
    spec = None if isinstance(model, ZooModel) else os.fspath(model)
    if spec is not None:
        model = zoo.load(spec, dtype=dtype, revision=revision, local_files_only=local_files_only)
    elif dtype is not None:
        model = model.to(dtype=dtype)
    base_name, base_revision = model_identity(model)
    base_name = spec or base_name  # the card names the base as it was given, so it can be loaded again
    if not model.supports_training:
        raise NotSupportedError(
            f"{model.arch} ({base_name}) does not support training (its class does not declare "
            "supports_training), so it cannot be fine-tuned"
        )

    out = Path(out_dir)
    paths = resolve_inputs(data)
    eval_paths = resolve_inputs(eval_data) if eval_data is not None else []
    eval_protocol = "held-out files given as eval_data"
    if not eval_paths and len(paths) >= 10:
        cut = len(paths) - max(1, len(paths) // 10)
        paths, eval_paths = paths[:cut], paths[cut:]
        eval_protocol = "the last tenth of the data files, held out from training"
    elif not eval_paths:
        eval_paths = paths
        eval_protocol = "the training files themselves (fewer than ten files, none held out)"
    run = {
        "base_model": base_name,
        "base_revision": base_revision,
        "arch": model.arch,
        "data": paths,
        "eval_data": eval_paths,
        "steps": steps,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "lr": lr,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "mixed_precision": mixed_precision,
        "eval_every": eval_every,
        "save_every": save_every,
        "seed": seed,
    }
    checkpoint = _prepare_out_dir(out, run, resume, overwrite, accelerator)

    set_seed(seed)
    items = _load_items(model, paths)
    eval_items = _load_items(model, eval_paths)
    model.train()
    wrapper = TrainingLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)

    step = 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        step = json.loads((checkpoint / DONE_NAME).read_text())["step"]
        logger.info("resumed from %s at step %d", checkpoint, step)
    log_lines = _log_lines_up_to(out, step) if accelerator.is_main_process else []

    per_process = batch_size // accelerator.num_processes
    start = accelerator.process_index * per_process
    bar = tqdm(total=steps, initial=step, desc="finetune", disable=not (progress and accelerator.is_main_process))
    losses: list[torch.Tensor] = []
    last_eval: dict[str, float] = {}
    for micro in range(step * grad_accum, steps * grad_accum):
        indices = micro_batch_indices(micro, batch_size, len(items), seed)[start : start + per_process]
        batch = _to_device(model.training_batch([items[i] for i in indices]), accelerator.device)
        with accelerator.accumulate(wrapper):
            loss = wrapper(batch)
            if not torch.isfinite(loss):
                raise InputError(f"{model.arch} training loss became {float(loss)} at step {step + 1}")
            accelerator.backward(loss)
            if accelerator.sync_gradients and max_grad_norm:
                accelerator.clip_grad_norm_(wrapper.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.detach().float())
        if not accelerator.sync_gradients:
            continue
        step += 1
        step_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
        losses = []
        log_lines.append({"step": step, "loss": step_loss})
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4g}")
        if step % eval_every == 0 or step == steps:
            last_eval = _evaluate(model, eval_items, batch_size, accelerator)
            log_lines.append({"step": step, "eval": last_eval})
            logger.info("step %d: %s", step, last_eval)
        if step % save_every == 0 or step == steps:
            _save_checkpoint(accelerator, out, step, log_lines)
    bar.close()
    if not last_eval:  # resumed after the last step was already saved
        last_eval = _evaluate(model, eval_items, batch_size, accelerator)

    summary = {**run, "final_eval": last_eval, "model_dir": str(out / "model")}
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(wrapper).model
        trained.eval()
        card = _finetune_card(trained, run, last_eval, eval_protocol, name or f"{Path(base_name).name}-finetuned")
        trained.save_pretrained(out / "model", card=card)
        _write_json(out / "summary.json", summary)
    accelerator.wait_for_everyone()
    return summary


def _to_device(batch: Any, device: torch.device) -> Any:
    from accelerate.utils import send_to_device

    return send_to_device(batch, device)


@torch.no_grad()
def _evaluate(model: ZooModel, items: list[Any], batch_size: int, accelerator) -> dict[str, float]:
    """Mean of the family's ``evaluate`` over ``items`` in fixed batches, weighted by batch size.

    Every process evaluates the same items with the same weights, so no gathering is needed.
    """
    model.eval()
    totals: dict[str, float] = {}
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        batch = _to_device(model.training_batch(chunk), accelerator.device)
        with accelerator.autocast():
            values = {key: float(value) for key, value in model.evaluate(batch).items()}
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value * len(chunk)
    model.train()
    return {key: total / len(items) for key, total in totals.items()}


def _prepare_out_dir(out: Path, run: dict[str, Any], resume: bool, overwrite: bool, accelerator) -> Path | None:
    run_path = out / RUN_NAME
    checkpoint = None
    if run_path.is_file() and not overwrite:
        if not resume:
            raise ConfigError(f"{out} already holds a fine-tuning run; pass --resume to continue or --overwrite")
        previous = json.loads(run_path.read_text())
        # The weights come from the checkpoint, so the base may have moved since; the card keeps the
        # revision the run started from.
        run["base_revision"] = previous.get("base_revision", run["base_revision"])
        changed = sorted(k for k in run if previous.get(k) != run[k])
        if changed:
            raise ConfigError(f"cannot resume {out}: the run differs in {', '.join(changed)}; use a new --out")
        checkpoint = _latest_checkpoint(out)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if overwrite and out.exists():
            shutil.rmtree(out)
        _write_json(run_path, run)
    accelerator.wait_for_everyone()
    return checkpoint


def _log_lines_up_to(out: Path, step: int) -> list[dict[str, Any]]:
    path = out / LOG_NAME
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["step"] <= step]


def _save_checkpoint(accelerator, out: Path, step: int, log_lines: list[dict[str, Any]]) -> None:
    folder = out / CHECKPOINTS / f"step-{step:06d}"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in log_lines)
        atomic_write(out / LOG_NAME, lambda tmp: tmp.write_text(text))
        _write_json(folder / DONE_NAME, {"step": step})  # written last: marks the checkpoint complete
    accelerator.wait_for_everyone()


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _finetune_card(model: ZooModel, run: dict[str, Any], metrics: dict[str, float], protocol: str, name: str):
    from zoo.cards import card_license, make_card
    from zoo.registry import card_data, list_models

    base = run["base_model"]
    base_data = card_data(base) if base in list_models() else {}
    num_files = len(run["data"])
    data_text = f"{num_files} files ({Path(run['data'][0]).parent}/...)"
    metric_rows = [
        {
            "name": f"eval {key}",
            "value": round(value, 6),
            "type": key,
            "dataset": data_text if "held-out" not in protocol else f"{len(run['eval_data'])} held-out files",
            "protocol": f"{protocol}; mean over files after {run['steps']} steps",
        }
        for key, value in metrics.items()
        if math.isfinite(value)
    ]
    return make_card(
        name=name,
        arch=model.arch,
        modality=model.modality,
        license=card_license(base_data) if base_data else model.license or "unknown",
        summary=f"{base} fine-tuned with `tokenzoo finetune` for {run['steps']} steps on {data_text}.",
        upstream_repo=base_data.get("upstream_repo"),
        upstream_revision=base_data.get("upstream_revision"),
        paper=base_data.get("paper"),
        tokens=base_data.get("tokens"),
        weights=(
            f"Fine-tuned from {base} at revision {run['base_revision']}: {run['steps']} optimizer steps of AdamW "
            f"(lr {run['lr']}, weight decay "
            f"{run['weight_decay']}), batch {run['batch_size']} x {run['grad_accum']} accumulation, mixed precision "
            f"{run['mixed_precision']}, seed {run['seed']}."
        ),
        metrics=metric_rows,
        base_model=base,
        base_model_revision=run["base_revision"],
        finetune={k: run[k] for k in ("steps", "batch_size", "grad_accum", "lr", "seed", "mixed_precision")},
        training_data=data_text,
    )


# ---- command line ------------------------------------------------------------------------------
def add_cli(subparsers) -> None:
    """Add ``finetune`` to a ``tokenzoo`` argparse subparsers object."""
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a model through its training_loss with accelerate (resumable)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("model", help="registered name, hf-hub:org/repo@rev, or a model folder")
    p.add_argument("--data", nargs="+", required=True, help="training files, folders, globs or @list files")
    p.add_argument("--eval-data", nargs="+", default=None, help="held-out files (default: last tenth of --data)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, log.jsonl, model/")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8, help="items per micro-batch, over all processes")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="name on the new model's card")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--cpu", action="store_true", help="train on CPU even where CUDA is present")
    add_model_options(p, device_help="cpu (as --cpu), else the device accelerate assigns each process")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    summary = finetune(
        args.model,
        args.data,
        args.out,
        eval_data=args.eval_data,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        mixed_precision=args.mixed_precision,
        eval_every=args.eval_every,
        save_every=args.save_every,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        cpu=args.cpu,
        progress=not args.no_progress,
        name=args.name,
        **model_options(args),
    )
    if process_state().is_main_process:
        print(f"fine-tuned {summary['base_model']} for {summary['steps']} steps: {summary['final_eval']}")
        print(f"model saved to {summary['model_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.tools.finetune ...`` (what ``accelerate launch -m zoo.tools.finetune`` runs)."""
    from zoo.tools.options import module_main

    return module_main("finetune", add_cli, argv)


if __name__ == "__main__":
    sys.exit(main())

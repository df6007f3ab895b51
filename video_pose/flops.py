"""Parameters and FLOPs of the lifters, counted with ``torch.utils.flop_counter`` on the meta device.

Counting conventions (both are batch 1, one forward):

* ``flops_total``: every matmul-type op FlopCounterMode counts (addmm = nn.Linear, mm = a Linear on a
  non-contiguous input such as TRA's expanded queries, bmm = attention's q k^T and attn v). cdist,
  norms, softmax and elementwise work are not counted.
* ``flops_linear``: addmm + mm only, i.e. 2 x MACs of the nn.Linear layers. This is how HoT's paper
  counts (thop 2 x MACs, which also misses the attention matmuls): MixSTE 277.25 G, HoT-MixSTE 167.51 G,
  MotionBERT 131.09 G, HoT-MotionBERT 63.21 G at 243 frames. thop itself adds LayerNorm and a few
  other module costs, 0.25-0.3 % more.

The model is built on the meta device, so counting a 35 M-parameter model at 243 frames takes no
compute and no memory.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

DEFAULT_ARCHS = ("mixste", "hot-mixste", "tpc-mixste", "motionbert", "hot-motionbert")
BASELINE = {"hot-mixste": "mixste", "tpc-mixste": "mixste", "hot-motionbert": "motionbert"}


def count_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict:
    """FLOPs of one forward of ``model`` on a zero input of ``input_shape``, by op, total and Linear-only."""
    device = next(model.parameters()).device
    x = torch.zeros(input_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    counts = counter.get_flop_counts()["Global"]
    by_op = {str(op).removeprefix("aten.").split(".")[0]: int(n) for op, n in counts.items()}
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "flops_total": int(counter.get_total_flops()),
        "flops_linear": by_op.get("addmm", 0) + by_op.get("mm", 0),
        "flops_attention": by_op.get("bmm", 0),
        "by_op": by_op,
    }


def default_model(arch: str, device: str | torch.device = "meta", **overrides):
    """``arch`` at its default (released) config, built on ``device``."""
    from zoo.registry import get_arch

    cls = get_arch(arch)
    with torch.device(device):
        return cls(cls.config_class(**overrides)).eval()


def flops_table(frames: int | None = None) -> list[dict]:
    """One row per default-config model: params and FLOPs at batch 1 and its full clip length."""
    rows = []
    for arch in DEFAULT_ARCHS:
        model = default_model(arch)
        f = frames or model.config.num_frames
        shape = (1, f, model.config.num_joints, model.config.in_channels)
        rows.append({"arch": arch, "frames": f, **count_flops(model, shape)})
    by_arch = {r["arch"]: r for r in rows}
    for row in rows:
        base = by_arch.get(BASELINE.get(row["arch"], ""))
        row["linear_ratio_vs_baseline"] = row["flops_linear"] / base["flops_linear"] if base else 1.0
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | frames | params | GFLOPs, Linear only (paper) | GFLOPs, all matmuls | vs baseline (Linear) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['frames']} | {r['params'] / 1e6:.2f} M | {r['flops_linear'] / 1e9:.2f} | "
            f"{r['flops_total'] / 1e9:.2f} | {r['linear_ratio_vs_baseline']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(flops_table()))

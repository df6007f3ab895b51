"""FlexTok speed: our batched encoder/decoder against an upstream-style packed run, and against a matmul.

    python bench/flextok.py [--steps 1] [--device cpu]

Shape: the released d12_d12 model (width 768, 12 + 12 blocks, 256 registers, 256 px -> 16x16
patches of 32x32x16 latents) with random weights. Timed: the token transformers, i.e. encode =
latents -> ids, decode = ids -> latents with CFG (conditional + null pass per Euler step). The VAE is
excluded (it is diffusers' AutoencoderKL, untouched by us, and at 256 px costs more than everything
else on a CPU).

Reported: images/s at batch 1 and 8, FLOPs per image (torch.utils.flop_counter), achieved GFLOP/s and
its fraction of a large float32 matmul timed in the same run. The peer runs decode as upstream
schedules it: all images packed into one sequence padded to a multiple of 128 with a block-diagonal
mask, conditional and null passes as two forwards. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import count_flops, matmul_gflops, timed  # noqa: E402  (bench/timing.py, beside this script)

from vision.flextok.layers import patchify, plain_layer_norm, unpatchify  # noqa: E402
from vision.flextok.model import FlexTok, FlexTokConfig  # noqa: E402


def packed_decoder_step(model: FlexTok, x, t, codes, keep, uncond) -> torch.Tensor:
    """Upstream's schedule with our weights: B sequences packed into one, padded to a multiple of
    128, one block-diagonal boolean mask, one forward (called once per pass)."""
    dec = model.decoder
    b, c, h, w = x.shape
    grid = (h // 2, w // 2)
    patches = dec.patch_proj(patchify(x, dec.patch_size)) + dec.patch_posemb[0, :, : grid[0], : grid[1]].flatten(1).T
    registers = dec.condition(codes, keep, uncond)
    seqs = torch.cat([patches, registers], dim=1)  # (B, n, D)
    n, d = seqs.shape[1], seqs.shape[2]
    total = b * n
    padded = -(-total // 128) * 128
    packed = torch.zeros(1, padded, d, device=x.device)
    packed[0, :total] = seqs.reshape(total, d)
    owner = torch.full((padded,), -1, device=x.device)
    owner[:total] = torch.arange(b, device=x.device).repeat_interleave(n)
    mask = (owner[:, None] == owner[None, :]) & (owner[:, None] >= 0)
    mask |= torch.eye(padded, dtype=torch.bool, device=x.device)  # padding rows attend to themselves
    temb = dec.time_embedder(t)  # (B, D)
    for block in dec.transformer["blocks"]:
        mod = block.adaLN_modulation(temb).view(b, block.groups, 6 * d)
        per_token = torch.zeros(1, padded, 6 * d, device=x.device)
        sizes = torch.tensor([patches.shape[1], registers.shape[1]], device=x.device)
        per_token[0, :total] = mod.repeat_interleave(sizes, dim=1).reshape(total, 6 * d)
        g1, g2, s1, c1, s2, c2 = per_token.chunk(6, dim=-1)
        y = packed
        y = y + g1 * block.attn(plain_layer_norm(y) * (1 + c1) + s1, mask)
        packed = y + g2 * block.mlp(plain_layer_norm(y) * (1 + c2) + s2)
    out = packed[0, :total].view(b, n, d)[:, : patches.shape[1]]
    return unpatchify(dec.to_patches(plain_layer_norm(out)), grid, dec.patch_size, c)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1, help="Euler steps per decode (each = 2 passes with CFG)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--peer-batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=768, help="width (d12: 768); smaller only for smoke runs")
    parser.add_argument("--depth", type=int, default=12)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = FlexTokConfig(
        vae_block_out_channels=(32, 32),
        vae_norm_num_groups=32,
        encoder_dim=args.dim,
        decoder_dim=args.dim,
        encoder_depth=args.depth,
        decoder_depth=args.depth,
        decode_steps=args.steps,
    )
    model = FlexTok(config, device=device).eval()  # tiny VAE: it is not timed; bf16 autocast on accelerators
    r, c = config.num_registers, config.latent_channels
    latent_hw = (config.image_size // 8, config.image_size // 8)

    def inputs(b):
        g = torch.Generator().manual_seed(b)
        latents = torch.randn(b, c, *latent_hw, generator=g).to(device)
        ids = torch.randint(0, model.fsq.codebook_size, (b, r), generator=g).to(device)
        return latents, model.fsq.ids_to_codes(ids), torch.full((b,), r, device=device)

    def encode(latents):
        return model.tokenize_latents(latents)

    def decode(noise, codes, keep):
        return model.sample_latents(codes, keep, noise, args.steps, guidance=7.5, apg=True)

    rows, result = [], {"bench": "flextok", "device": str(device), "steps": args.steps, "shape": "d12_d12 256px"}
    with torch.inference_mode():
        mm = matmul_gflops(device)
        lat1, codes1, keep1 = inputs(1)
        enc_flops = count_flops(lambda: encode(lat1))  # also the warm-up
        dec_flops = count_flops(lambda: decode(lat1, codes1, keep1))
        for b in [int(v) for v in args.batches.split(",")]:
            # shared machines: re-measure the matmul between runs and keep the best rate seen
            mm = max(mm, matmul_gflops(device))
            lat, codes, keep = inputs(b)
            te = timed(lambda lat=lat: encode(lat), device)
            td = timed(lambda lat=lat, codes=codes, keep=keep: decode(lat, codes, keep), device)
            for kind, seconds, flops in (("encode", te, enc_flops), ("decode", td, dec_flops)):
                gflops = b * flops / seconds / 1e9
                rows.append((f"ours {kind}", b, b / seconds, gflops, gflops / mm))
                result[f"{kind}_images_per_s_b{b}"] = round(b / seconds, 4)
                result[f"{kind}_matmul_fraction_b{b}"] = round(gflops / mm, 3)
        pb = args.peer_batch
        lat, codes, keep = inputs(pb)
        t = torch.ones(pb, device=device)
        uncond = torch.ones(pb, dtype=torch.bool, device=device)

        def peer_step():
            cond = packed_decoder_step(model, lat, t, codes, keep, ~uncond)
            null = packed_decoder_step(model, lat, t, codes, keep, uncond)
            return null + 7.5 * (cond - null)

        def ours_step():
            return model.sample_latents(codes, keep, lat, 1, guidance=7.5, apg=False)

        results = {}
        t_peer = timed(lambda: results.__setitem__("peer", peer_step()), device)
        t_ours = timed(lambda: results.__setitem__("ours", ours_step()), device)
        # same math either way: the packed step's velocity equals ours
        torch.testing.assert_close(results["peer"], lat - results["ours"], atol=5e-3, rtol=1e-3)
        rows.append(("upstream-style packed step", pb, pb / t_peer, float("nan"), float("nan")))
        rows.append(("ours batched step", pb, pb / t_ours, float("nan"), float("nan")))
    if args.dim != 768 or args.depth != 12:
        result["shape"] = f"width {args.dim} depth {args.depth} (smoke run, not d12_d12)"
    mm = max(mm, matmul_gflops(device))
    for i, (name, b, ips, gf, _) in enumerate(rows):
        rows[i] = (name, b, ips, gf, gf / mm)  # fractions against the best matmul rate of the whole run
    for key in [k for k in result if "matmul_fraction_b" in k]:
        kind, b = key.split("_matmul_fraction_b")
        flops = enc_flops if kind == "encode" else dec_flops
        result[key] = round(flops * result[f"{kind}_images_per_s_b{b}"] / 1e9 / mm, 3)  # achieved / matmul
    result.update(
        encode_gflop_per_image=round(enc_flops / 1e9, 1),
        decode_gflop_per_image=round(dec_flops / 1e9, 1),
        matmul_gflops=round(mm, 1),
        decode_matmul_fraction=result.get("decode_matmul_fraction_b8"),
        encode_matmul_fraction=result.get("encode_matmul_fraction_b8"),
        speedup_vs_packed_b2=round(t_peer / t_ours, 2),
    )
    print(
        f"matmul 2048^3 float32: {mm:.1f} GFLOP/s; FLOPs/image: encode {enc_flops / 1e9:.1f} G, "
        f"decode ({args.steps} step(s), CFG) {dec_flops / 1e9:.1f} G"
    )
    print(f"{'run':30s} {'batch':>5s} {'images/s':>10s} {'GFLOP/s':>9s} {'of matmul':>9s}")
    for name, b, ips, gf, frac in rows:
        print(f"{name:30s} {b:5d} {ips:10.4f} {gf:9.1f} {frac:9.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

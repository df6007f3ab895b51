"""Upstream release files rebuilt from small weights, laid out as their publishers lay them out.

Tests cannot download the real releases, so they build stand-ins the way the publishers built theirs:

- S3Tokenizer ONNX graphs (``speech_tokenizer_v*.onnx``) are produced by ``torch.onnx.export`` (the
  TorchScript exporter, as in 2024) from :class:`ReleaseS3Tokenizer`, a module with the tree the released
  graphs' node and initializer names show: ``encoders.conv1`` / ``encoders.positional_embedding`` (or
  top-level ``conv1`` for v3), ``blocks.N.attn.{query,key,value,out,fsmn_block}``, ``blocks.N.{attn_ln,
  mlp_ln}``, ``blocks.N.mlp.{0,2}``, and ``quantizer.rq.model.layers.0._codebook`` (VQ) or
  ``quantizer.project_in`` (FSQ). Nothing here is hand-assembled ONNX: scalar operands (the ``pow(2)``
  exponents, LayerNorm's epsilon) become ``Constant`` nodes exactly where the exporter puts them.
- Training checkpoints are pickled as the training scripts save them: ``module.`` prefixes from
  DataParallel, optimizer state, epoch counters, ``argparse.Namespace`` arguments (TokenUnify), numpy
  scalars (MotionBERT's ``min_loss``).

The modules compute what upstream computes (tests check their ids against the parity fixtures before
exporting), written here in our own words from the fixture README's description.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Opset per release family: the v1 graphs and v3 decompose LayerNorm (opset < 17), v2 has LayerNormalization.
OPSET = {"v1": 13, "v1_25hz": 13, "v2": 17, "v3": 13}
RELEASE_FILE = {
    "v1": "speech_tokenizer_v1.onnx",
    "v1_25hz": "speech_tokenizer_v1.onnx",  # the same name as v1's: only the graph tells them apart
    "v2": "speech_tokenizer_v2.onnx",
    "v3": "speech_tokenizer_v3.onnx",
}


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class ReleaseAttention(nn.Module):
    """Self-attention as the releases name it: query/key (no bias)/value/out, plus FSMN memory on v2/v3."""

    def __init__(self, n_state: int, n_head: int, fsmn_kernel: int | None):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)
        self.fsmn_block = None
        if fsmn_kernel:
            self.fsmn_block = nn.Conv1d(n_state, n_state, fsmn_kernel, groups=n_state, bias=False)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        memory = None
        if self.fsmn_block is not None:  # depthwise conv over time on the values, plus the values
            pad = (self.fsmn_block.kernel_size[0] - 1) // 2
            memory = self.fsmn_block(F.pad(v.transpose(1, 2), (pad, pad))).transpose(1, 2) + v
        q, k, v = (z.view(b, t, self.n_head, -1) for z in (q, k, v))  # (B, T, H, Dh)
        if rotary is not None:
            cos, sin = rotary[0][:t, None], rotary[1][:t, None]  # (T, 1, Dh)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        scale = q.shape[-1] ** -0.25
        q, k, v = q.permute(0, 2, 1, 3) * scale, k.permute(0, 2, 3, 1) * scale, v.permute(0, 2, 1, 3)
        weights = (q @ k).float().softmax(dim=-1)  # (B, H, T, T)
        attended = self.out((weights @ v).permute(0, 2, 1, 3).flatten(2))
        return attended if memory is None else attended + memory


class ReleaseBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, fsmn_kernel: int | None):
        super().__init__()
        self.attn = ReleaseAttention(n_state, n_head, fsmn_kernel)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: Tensor, rotary) -> Tensor:
        x = x + self.attn(self.attn_ln(x), rotary)
        return x + self.mlp(self.mlp_ln(x))


class ReleaseCodebook(nn.Module):
    """VQ: nearest codeword of the L2-normalised frame, as -(|x|^2 - 2 x.E + |E|^2) maximised."""

    def __init__(self, codebook_size: int, n_state: int):
        super().__init__()
        self.register_buffer("embed", torch.zeros(codebook_size, n_state))

    def forward(self, h: Tensor) -> Tensor:
        x = F.normalize(h.float(), dim=-1)
        e = self.embed.t()  # (C, K): the exporter folds the transpose into a (C, K) initializer
        score = -(x.pow(2).sum(-1, keepdim=True) - 2 * x @ e + e.pow(2).sum(0, keepdim=True))
        return score.argmax(dim=-1)


class _Layer0(nn.Module):
    def __init__(self, codebook: nn.Module):
        super().__init__()
        self._codebook = codebook

    def forward(self, h: Tensor) -> Tensor:
        return self._codebook(h)


class _Layers(nn.Module):
    def __init__(self, codebook: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList([_Layer0(codebook)])

    def forward(self, h: Tensor) -> Tensor:
        return self.layers[0](h)


class _Model(nn.Module):
    def __init__(self, codebook: nn.Module):
        super().__init__()
        self.model = _Layers(codebook)

    def forward(self, h: Tensor) -> Tensor:
        return self.model(h)


class ReleaseVQ(nn.Module):
    """``quantizer.rq.model.layers.0._codebook``: the scope path of the v1 graphs' codebook nodes."""

    def __init__(self, codebook_size: int, n_state: int):
        super().__init__()
        self.rq = _Model(ReleaseCodebook(codebook_size, n_state))

    def forward(self, h: Tensor) -> Tensor:
        return self.rq(h)


class ReleaseFSQ(nn.Module):
    """``quantizer.project_in`` to 8 dims, then 3 levels per dim: id = sum_i (round(0.999 tanh z_i) + 1) 3^i."""

    def __init__(self, n_state: int):
        super().__init__()
        self.project_in = nn.Linear(n_state, 8)
        self.register_buffer("powers", 3 ** torch.arange(8), persistent=False)

    def forward(self, h: Tensor) -> Tensor:
        z = self.project_in(h).float()
        digits = torch.round(torch.tanh(z) * 0.9990000128746033) + 1
        return (digits.long() * self.powers).sum(-1)


class _Encoders(nn.Module):
    def __init__(self, n_mels: int, n_state: int, stride1: int, n_ctx: int | None):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, 3, stride=stride1, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, 3, stride=2, padding=1)
        if n_ctx:
            self.register_buffer("positional_embedding", torch.zeros(n_ctx, n_state))


class ReleaseS3Tokenizer(nn.Module):
    """(1, n_mels, T) log-mel -> (1, T') token ids, with the module tree of the released graphs."""

    def __init__(
        self,
        variant: str,
        n_state: int,
        n_head: int,
        n_layer: int,
        n_mels: int = 128,
        n_ctx: int = 1500,
        codebook_size: int = 4096,
        fsmn_kernel: int = 31,
    ):
        super().__init__()
        self.variant = variant
        fsq = variant in ("v2", "v3")
        stride1 = 1 if variant == "v1" else 2
        convs = _Encoders(n_mels, n_state, stride1, None if fsq else n_ctx)
        if variant == "v3":  # v3's graph names its front convs /conv1/Conv, /conv2/Conv
            self.conv1, self.conv2 = convs.conv1, convs.conv2
        else:
            self.encoders = convs
        self.blocks = nn.ModuleList(ReleaseBlock(n_state, n_head, fsmn_kernel if fsq else None) for _ in range(n_layer))
        self.quantizer = ReleaseFSQ(n_state) if fsq else ReleaseVQ(codebook_size, n_state)
        if fsq:  # rotary tables for 64-wide heads and 2048 positions, as upstream precomputes them
            head_dim = n_state // n_head
            inv_freq = 10000.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim)
            angles = torch.outer(torch.arange(2048).float(), inv_freq)
            self.register_buffer("rotary_cos", torch.cat([angles.cos()] * 2, -1), persistent=False)
            self.register_buffer("rotary_sin", torch.cat([angles.sin()] * 2, -1), persistent=False)

    def _convs(self):
        return (self.conv1, self.conv2) if self.variant == "v3" else (self.encoders.conv1, self.encoders.conv2)

    def forward(self, feats: Tensor) -> Tensor:
        conv1, conv2 = self._convs()
        x = F.gelu(conv2(F.gelu(conv1(feats)))).permute(0, 2, 1)  # (1, T', C)
        rotary = None
        if self.variant in ("v2", "v3"):
            rotary = (self.rotary_cos, self.rotary_sin)
        else:
            x = x + self.encoders.positional_embedding[: x.shape[1]]
        for block in self.blocks:
            x = block(x, rotary)
        return self.quantizer(x)

    def load_upstream_state(self, state: dict[str, Tensor]) -> ReleaseS3Tokenizer:
        """Load an upstream-named state dict (the parity fixtures' ``weights.safetensors``) strictly."""
        renamed = {}
        for key, value in state.items():
            if key.startswith("encoder.blocks."):
                key = key.removeprefix("encoder.")
            elif key.startswith("encoder."):
                key = key.replace("encoder.", "" if self.variant == "v3" else "encoders.", 1)
            elif key == "quantizer._codebook.embed":
                key = "quantizer.rq.model.layers.0._codebook.embed"
            elif key.startswith("quantizer._codebook.project_down."):
                key = key.replace("quantizer._codebook.project_down.", "quantizer.project_in.")
            renamed[key] = value
        self.load_state_dict(renamed, strict=True)
        return self.eval()


def release_s3tokenizer(variant: str, state: dict[str, Tensor], n_head: int) -> ReleaseS3Tokenizer:
    """The release-layout module of ``variant`` holding ``state`` (upstream key names); sizes from the shapes."""
    n_state, n_mels, _ = state["encoder.conv1.weight"].shape
    n_layer = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks."))
    sizes = {"n_mels": n_mels}
    if "encoder.positional_embedding" in state:
        sizes["n_ctx"] = state["encoder.positional_embedding"].shape[0]
    if "quantizer._codebook.embed" in state:
        sizes["codebook_size"] = state["quantizer._codebook.embed"].shape[0]
    if "encoder.blocks.0.attn.fsmn_block.weight" in state:
        sizes["fsmn_kernel"] = state["encoder.blocks.0.attn.fsmn_block.weight"].shape[-1]
    module = ReleaseS3Tokenizer(variant, n_state, n_head, n_layer, **sizes)
    return module.load_upstream_state(state)


def export_s3tokenizer_release(module: ReleaseS3Tokenizer, path: Path) -> Path:
    """``torch.onnx.export`` the module as the releases were exported: TorchScript exporter, one (1, n_mels, T)
    ``feats`` input with a dynamic time axis, the release family's opset."""
    import warnings

    n_mels = module._convs()[0].in_channels
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(
            module,
            (torch.zeros(1, n_mels, 64),),
            str(path),
            dynamo=False,
            opset_version=OPSET[module.variant],
            input_names=["feats"],
            output_names=["tokens"],
            dynamic_axes={"feats": {2: "frames"}, "tokens": {1: "tokens"}},
        )
    return path


# ---- pickled training checkpoints ------------------------------------------------------------------
def optimizer_state(state: dict[str, Tensor]) -> dict:
    """An AdamW state_dict over parameters shaped like ``state``, after one step (as a training run saves it)."""
    params = [nn.Parameter(v.detach().float().clone()) for v in state.values() if v.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return optimizer.state_dict()


def with_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"module.{k}": v for k, v in state.items()}


def save_tokenunify_training_checkpoint(state: dict[str, Tensor], path: Path, epoch: int = 399) -> Path:
    """``util_mamba/misc.save_model``'s layout: model (``module.``-prefixed), optimizer, epoch, scaler, args."""
    args = argparse.Namespace(model="segmamba", batch_size=6, blr=1e-4, epochs=400, crop_size=[16, 160, 160])
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
    checkpoint = {
        "model": with_module_prefix(state),
        "optimizer": optimizer_state(state),
        "epoch": epoch,
        "scaler": scaler,
        "args": args,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def save_motionbert_best_epoch(state: dict[str, Tensor], path: Path, numpy_1_spelling: bool = False) -> Path:
    """MotionBERT ``train.py``'s ``best_epoch.bin``: epoch, lr, optimizer, ``module.``-prefixed model_pos and
    ``min_loss`` as a numpy float64. ``numpy_1_spelling`` rewrites the pickle as numpy 1.x writes it
    (``numpy.core.multiarray.scalar``), using torch's legacy format, whose pickle names globals in plain text."""
    checkpoint = {
        "epoch": 59,
        "lr": 0.0002,
        "optimizer": optimizer_state(state),
        "model_pos": with_module_prefix(state),
        "min_loss": np.float64(math.pi / 100),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if not numpy_1_spelling:
        torch.save(checkpoint, path)
        return path
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    new, old = b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"
    assert new in data, "the legacy pickle did not name numpy's scalar global as expected"
    path.write_bytes(data.replace(new, old))
    return path


# ---- official cards pointed at test-sized releases -------------------------------------------------------
def official_card_copy(name: str, cards: Path, files: list[dict] | None = None, options: dict | None = None) -> Path:
    """A copy of hub_cards/<name> in ``cards`` (use as $TOKENZOO_CARDS_DIR) whose upstream files and converter
    options are updated by ``files`` (one dict of fields per file, e.g. the stand-in's sha256) and ``options``
    (sizes a test-sized release has that the weights cannot tell, such as a head count). Everything else (repo,
    file name, revision, converter) stays the card's own; the card itself is never edited."""
    from huggingface_hub import ModelCard

    from zoo.registry import _card_folders

    card = ModelCard.load(_card_folders()[name] / "README.md")
    upstream = [dict(f) for f in card.data.upstream_files]
    for entry, update in zip(upstream, files or []):
        entry.update(update)
    card.data.upstream_files = upstream
    card.data.converter_options = {**(card.data.converter_options or {}), **(options or {})}
    folder = cards / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(str(card))
    return cards


# ---- SEED: seed_quantizer.pt (AILab-CVC/seed-tokenizer-2) and LAVIS's eva_vit_g.pth ----------------------
SEED_VIT = "visual_encoder."


def seed_blip2_extras(state: dict[str, Tensor], vocab: int = 30, positions: int = 16) -> dict[str, Tensor]:
    """The BLIP-2 tensors the release carries beside the tokenizer's (upstream's strict=False load reports them
    as unexpected): the Q-Former's text branch (word and position embeddings, each layer's text FFN), the
    masked-LM head, the contrastive and matching heads and the temperature. Shapes follow the Q-Former width
    and FFN size of ``state``; the vocabulary and position counts are small stand-ins for BERT's."""
    width = state["query_tokens"].shape[-1]
    ffn = state["Qformer.bert.encoder.layer.0.intermediate_query.dense.weight"].shape[0]
    layers = sorted({int(k.split(".")[4]) for k in state if k.startswith("Qformer.bert.encoder.layer.")})
    shapes: dict[str, tuple[int, ...]] = {
        "Qformer.bert.embeddings.word_embeddings.weight": (vocab, width),
        "Qformer.bert.embeddings.position_embeddings.weight": (positions, width),
    }
    for i in layers:
        layer = f"Qformer.bert.encoder.layer.{i}."
        shapes.update({layer + "intermediate.dense.weight": (ffn, width), layer + "intermediate.dense.bias": (ffn,)})
        shapes.update({layer + "output.dense.weight": (width, ffn), layer + "output.dense.bias": (width,)})
        shapes.update({layer + "output.LayerNorm.weight": (width,), layer + "output.LayerNorm.bias": (width,)})
    head = "Qformer.cls.predictions."
    shapes.update({head + "bias": (vocab,), head + "decoder.weight": (vocab, width)})
    shapes.update({head + "transform.dense.weight": (width, width), head + "transform.dense.bias": (width,)})
    shapes.update({head + "transform.LayerNorm.weight": (width,), head + "transform.LayerNorm.bias": (width,)})
    for proj in ("vision_proj", "text_proj"):
        shapes.update({f"{proj}.weight": (256, width), f"{proj}.bias": (256,)})
    shapes.update({"itm_head.weight": (2, width), "itm_head.bias": (2,), "temp": ()})
    g = torch.Generator().manual_seed(0)
    return {key: torch.randn(shape, generator=g) * 0.02 for key, shape in shapes.items()}


def save_seed_release(state: dict[str, Tensor], folder: Path, extra_vit_blocks: int = 1) -> tuple[Path, Path]:
    """``Blip2QformerQuantizer.state_dict()`` (upstream names) -> the two files the release is made of:

    - ``seed_quantizer.pt``: ``torch.save`` of the bare state_dict without the ViT (``visual_encoder.*``),
      with the Q-Former's ``position_ids`` buffer and the BLIP-2 extras (``seed_blip2_extras``);
    - ``eva_vit_g.pth``: the ViT as LAVIS saves it, a bare state_dict without prefix, holding
      ``extra_vit_blocks`` more blocks than SEED runs (EVA-CLIP-g has 40 blocks, SEED runs 39). LAVIS's file is
      float16; this one keeps the weights' float32 so that the ids can be compared with the fixture's.
    """
    from collections import OrderedDict

    quantizer = OrderedDict((k, v.clone()) for k, v in state.items() if not k.startswith(SEED_VIT))
    quantizer.update(seed_blip2_extras(state))
    vit = OrderedDict((k[len(SEED_VIT) :], v.clone()) for k, v in state.items() if k.startswith(SEED_VIT))
    depth = 1 + max(int(k.split(".")[1]) for k in vit if k.startswith("blocks."))
    last = f"blocks.{depth - 1}."
    for i in range(depth, depth + extra_vit_blocks):
        vit.update({k.replace(last, f"blocks.{i}.", 1): v.clone() for k, v in vit.items() if k.startswith(last)})
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(quantizer, folder / "seed_quantizer.pt")
    torch.save(vit, folder / "eva_vit_g.pth")
    return folder / "seed_quantizer.pt", folder / "eva_vit_g.pth"

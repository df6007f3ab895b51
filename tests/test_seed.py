"""SEED's zoo surface on tiny random models: encode/decode contract, batching, pixel decoders, bad input,
and the converter of the release files (pickles written here in upstream's layout)."""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from vision.seed.model import SEED, SEEDConfig
from zoo.api import Tokens
from zoo.cards import read_card_data
from zoo.errors import CheckpointMismatchError, ConfigError, InputError, NotSupportedError

TEST_CONFIG = SEEDConfig(
    image_size=28,
    patch_size=14,
    vit_width=32,
    vit_depth=2,
    vit_heads=2,
    vit_mlp_hidden=64,
    qformer_width=48,
    qformer_layers=2,
    qformer_heads=4,
    qformer_intermediate=96,
    codebook_size=64,
    codebook_dim=8,
    detok_depth=1,
    image_down_dims=(16, 8),
    generation_dim=32,
    decode_steps=2,
    guidance=3.0,
)
WITH_PIXELS = dataclasses.replace(
    TEST_CONFIG, pixel_decoder="unet", pixel_size=16, pixel_channels=(8, 16), pixel_norm_groups=4
)


def randomized(config: SEEDConfig, seed: int = 0) -> SEED:
    """A random SEED whose weights all matter (upstream's init makes ids nearly constant at this width)."""
    torch.manual_seed(seed)
    model = SEED(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("pixel_decoder"):
                continue
            if p.dim() >= 2:
                p.normal_(0, 1 / max(p.shape[-1], 1) ** 0.5)
        model.quantize.embed.normal_(0, 0.6)
        model.query_tokens.normal_(0, 0.5)
        model.pos_embed_image.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def model():
    return randomized(TEST_CONFIG)


@pytest.fixture(scope="module")
def pixel_model():
    return randomized(WITH_PIXELS)


def pictures(n=3, seed=0, size=(40, 30)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


# ---- encode -------------------------------------------------------------------------------------
def test_encode_gives_32_ids_per_image_with_the_image_size_in_meta(model):
    tokens = model.encode(pictures(3))
    assert tokens.ids.shape == (3, 32) and tokens.ids.dtype == torch.int64 and tokens.mask.all()
    assert 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < 64
    assert tokens.meta["image_size"] == [28, 28] and tokens.meta["codebook_size"] == 64


def test_paths_pil_images_and_arrays_of_one_picture_give_the_same_ids(model, tmp_path):
    picture = pictures(1)[0]
    picture.save(tmp_path / "a.png")
    ids = [model.encode(x).ids for x in (picture, str(tmp_path / "a.png"), np.asarray(picture))]
    assert torch.equal(ids[0], ids[1]) and torch.equal(ids[0], ids[2])


def test_an_image_gets_the_same_ids_alone_and_in_a_batch(model):
    batch = pictures(4, seed=1)
    together = model.encode(batch).ids
    for i, picture in enumerate(batch):
        assert torch.equal(model.encode(picture).ids[0], together[i])


def test_a_query_never_sees_the_queries_after_it(model):
    _, ln = model.image_features(model.preprocess(pictures(2)))
    base = model.causal_embeddings(ln)
    original = model.query_tokens.detach().clone()
    try:
        with torch.no_grad():
            model.query_tokens[:, 20:] += 1.0
        moved = model.causal_embeddings(ln)
    finally:
        with torch.no_grad():
            model.query_tokens.copy_(original)
    assert torch.equal(moved[:, :20], base[:, :20]) and not torch.equal(moved[:, 20:], base[:, 20:])


def test_grayscale_and_rgba_pictures_are_converted_to_rgb_as_upstream_does(model):
    rgb = pictures(1)[0]
    for converted in (rgb.convert("L"), rgb.convert("RGBA")):
        assert torch.equal(model.encode(converted).ids, model.encode(converted.convert("RGB")).ids)
    gray = np.asarray(rgb.convert("L"))
    assert torch.equal(model.encode(gray).ids, model.encode(gray[..., None]).ids)


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.zeros(2, 1, 28, 28), "must have 3 channels"),
        (torch.zeros(2, 4, 28, 28), "must have 3 channels"),
        (torch.zeros(2, 3, 32, 32), "must be 28x28"),
        (torch.full((1, 3, 28, 28), 128.0), "CLIP-normalised"),
        (np.zeros((8, 8, 3), dtype=np.float32), "must be uint8"),
        (np.zeros((8, 8, 2), dtype=np.uint8), "HxW, HxWx1, HxWx3 or HxWx4"),
        ("no/such/picture.png", "image file no/such/picture.png not found"),
        (torch.zeros(3, 28, 28), "must have 4 dimensions"),
        (torch.zeros(1, 3, 28, 28, dtype=torch.uint8), "must be floating point"),
        (torch.full((1, 3, 28, 28), float("nan")), "NaN"),
        ([], "no images given"),
    ],
)
def test_bad_images_are_refused_with_a_message_naming_the_problem(model, bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        model.encode(bad)


@pytest.mark.parametrize("size", [(53, 37), (29, 61), (241, 300), (40, 40), (12, 20), (28, 90), (90, 28)])
def test_the_squash_resize_is_pillow_13s_on_any_pillow(size):
    """Pillow 13 runs the vertical pass first when the height shrinks by more than twice the width's pixels;
    Pillow 12 never does. Elsewhere both equal Pillow's own resize; on Pillow >= 13 everywhere."""
    import PIL

    from vision.seed.model import pil_squash, vertical_pass_first

    image = pictures(1, seed=7, size=size)[0]
    ours = np.asarray(pil_squash(image, 28, 28))
    pillows = np.asarray(image.resize((28, 28), Image.Resampling.BICUBIC))
    assert ours.shape == (28, 28, 3)
    both_passes = size[0] != 28 and size[1] != 28  # a one-axis resize has one pass: no order to get wrong
    if int(PIL.__version__.split(".")[0]) >= 13 or not (both_passes and vertical_pass_first(*size, 28, 28)):
        assert np.array_equal(ours, pillows)
    else:  # Pillow 12 goes horizontally first: the rounded intermediate differs
        vertical_first = image.resize((size[0], 28), Image.Resampling.BICUBIC).resize((28, 28), Image.BICUBIC)
        assert np.array_equal(ours, np.asarray(vertical_first)) and not np.array_equal(ours, pillows)


def test_a_file_that_is_not_an_image_is_refused_by_name(model, tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(InputError, match="cannot read .*notes.png"):
        model.encode(str(tmp_path / "notes.png"))


# ---- decode -------------------------------------------------------------------------------------
def test_decode_to_the_generation_embedding_needs_no_pixel_decoder(model):
    tokens = model.encode(pictures(2))
    embedding = model.decode(tokens, output="embedding")
    assert embedding.shape == (2, 32) and embedding.dtype == torch.float32
    torch.testing.assert_close(embedding, model.generation_embedding(tokens.ids))
    with pytest.raises(NotSupportedError, match="output='embedding'.*attach_unclip"):
        model.decode(tokens)


@pytest.mark.parametrize(
    "tokens,message",
    [
        (Tokens(ids=torch.full((1, 32), 64)), "token ids must lie in [0, 64)"),
        (Tokens(ids=torch.full((1, 32), -1)), "token ids must lie in [0, 64)"),
        (Tokens(ids=torch.zeros(1, 31, dtype=torch.int64)), "exactly 32 tokens"),
        (Tokens(ids=torch.zeros(1, 33, dtype=torch.int64)), "exactly 32 tokens"),
        (Tokens(ids=torch.zeros(1, 32, dtype=torch.int64), mask=torch.arange(32)[None] < 8), "all 32 tokens"),
        (Tokens(embeddings=torch.zeros(1, 32, 8)), "discrete ids"),
        (torch.zeros(1, 32, dtype=torch.int64), "decode takes zoo.Tokens, got Tensor"),
    ],
)
def test_bad_tokens_are_refused_before_decoding(model, tokens, message):
    with pytest.raises(InputError, match=re.escape(message)):
        model.decode(tokens, output="embedding")


def test_the_tiny_pixel_decoder_draws_images_per_image_deterministically(pixel_model):
    tokens = pixel_model.encode(pictures(3, seed=2))
    images = pixel_model.decode(tokens, seed=7)
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    assert torch.equal(pixel_model.decode(tokens, seed=7), images)
    torch.testing.assert_close(pixel_model.decode(tokens[1], seed=7), images[1:2], atol=1e-5, rtol=0)
    assert not torch.equal(pixel_model.decode(tokens, seed=8), images)
    assert len(pixel_model.postprocess(images)) == 3


def test_decode_rejects_a_seed_list_of_the_wrong_length(pixel_model):
    with pytest.raises(InputError, match="one per image"):
        pixel_model.decode(pixel_model.encode(pictures(2)), seed=[1, 2, 3])


def tiny_unclip(embedding_dim: int):
    """A StableUnCLIPImg2ImgPipeline of tiny random components, as diffusers' own tests build it (the
    CLIP tokenizer gets a byte-level vocabulary written here instead of a downloaded one)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    vocab = {}
    for b in range(256):
        c = chr(b) if 33 <= b <= 126 else chr(256 + b)
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    torch.manual_seed(0)
    width = 32
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=width,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(vocab),
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        )
    ).eval()
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=width,
            projection_dim=embedding_dim,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=32,
            intermediate_size=37,
            patch_size=4,
        )
    ).eval()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        attention_head_dim=(2, 4),
        class_embed_type="projection",
        projection_class_embeddings_input_dim=embedding_dim * 2,  # the embedding + its noise-level embedding
        cross_attention_dim=width,
        layers_per_block=1,
        upcast_attention=True,
        use_linear_projection=True,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
    ).eval()
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
        image_encoder=image_encoder,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embedding_dim).eval(),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            prediction_type="v_prediction",
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        vae=vae,
    )


@pytest.mark.slow
def test_an_attached_unclip_pipeline_decodes_a_batch_of_four_deterministically(model):
    model.attach_unclip(tiny_unclip(TEST_CONFIG.generation_dim))
    try:
        tokens = model.encode(pictures(4, seed=3))
        images = model.decode(tokens, seed=0, steps=2, guidance=3.0, noise_level=10)
        assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
        assert float(images.min()) >= -1 and float(images.max()) <= 1
        assert torch.equal(model.decode(tokens, seed=0, steps=2, guidance=3.0, noise_level=10), images)
        alone = model.decode(tokens[2], seed=0, steps=2, guidance=3.0, noise_level=10)
        torch.testing.assert_close(alone, images[2:3], atol=1e-4, rtol=0)
        assert not torch.equal(model.decode(tokens, seed=1, steps=2, guidance=3.0, noise_level=10), images)
    finally:
        model._unclip = None


def test_an_unclip_pipeline_of_another_embedding_width_is_refused(model):
    with pytest.raises(ConfigError, match="16-d image embeddings"):
        model.attach_unclip(tiny_unclip(16))


# ---- files, dtype, training ----------------------------------------------------------------------
def test_save_and_load_round_trip_keeps_the_ids_and_the_pixel_decoder(pixel_model, tmp_path):
    pixel_model.save_pretrained(tmp_path / "seed")
    loaded = zoo.load(tmp_path / "seed")
    assert type(loaded) is SEED and loaded.config == WITH_PIXELS
    batch = pictures(2)
    assert torch.equal(loaded.encode(batch).ids, pixel_model.encode(batch).ids)
    tokens = pixel_model.encode(batch)
    assert torch.equal(loaded.decode(tokens, seed=1), pixel_model.decode(tokens, seed=1))


def test_the_constructor_builds_in_the_dtype_it_is_given(model):
    half = SEED(TEST_CONFIG, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    half.load_state_dict(model.state_dict())
    tokens = half.eval().encode(pictures(2))
    assert tokens.ids.shape == (2, 32) and half.decode(tokens, output="embedding").dtype == torch.float32


def test_training_loss_trains_quantizer_detokenizer_and_pixel_decoder_but_not_the_frozen_encoders(pixel_model):
    pixel_model.train()
    try:
        targets = torch.randn(3, WITH_PIXELS.generation_dim, generator=torch.Generator().manual_seed(0))
        loss = pixel_model.training_loss({"images": pixel_model.preprocess(pictures(3)), "image_embeds": targets})
        loss.backward()
    finally:
        pixel_model.eval()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in pixel_model.named_parameters()}
    for trained in (
        "encode_task_layer.0.weight",
        "quantize.embed",
        "blocks.0.attn.qkv.weight",
        "blocks_image.0.attn.qkv.weight",
        "distill_image_proj.weight",
        "pixel_decoder.condition.1.weight",
    ):
        assert grads[trained] is not None and grads[trained].abs().sum() > 0, trained
    for frozen in (
        "visual_encoder.blocks.0.attn.qkv.weight",
        "qformer.layers.0.attention.query.weight",
        "query_tokens",
    ):
        assert grads[frozen] is None, frozen
    pixel_model.zero_grad(set_to_none=True)


# ---- the release files --------------------------------------------------------------------------
UPSTREAM_NAMES = [
    (r"qformer\.embed_norm\.", "Qformer.bert.embeddings.LayerNorm."),
    (
        r"qformer\.layers\.(\d+)\.(attention|crossattention)\.(query|key|value)\.",
        r"Qformer.bert.encoder.layer.\1.\2.self.\3.",
    ),
    (r"qformer\.layers\.(\d+)\.(attention|crossattention)\.dense\.", r"Qformer.bert.encoder.layer.\1.\2.output.dense."),
    (
        r"qformer\.layers\.(\d+)\.(attention|crossattention)\.norm\.",
        r"Qformer.bert.encoder.layer.\1.\2.output.LayerNorm.",
    ),
    (r"qformer\.layers\.(\d+)\.intermediate_query\.", r"Qformer.bert.encoder.layer.\1.intermediate_query.dense."),
    (r"qformer\.layers\.(\d+)\.output_query\.", r"Qformer.bert.encoder.layer.\1.output_query.dense."),
    (r"qformer\.layers\.(\d+)\.output_norm\.", r"Qformer.bert.encoder.layer.\1.output_query.LayerNorm."),
    (r"quantize\.embed$", "quantize.embedding.weight"),
]
# The release's head counts (no weight holds them) at a width the tests can afford.
RELEASE_SHAPED = dataclasses.replace(
    TEST_CONFIG, vit_depth=39, vit_heads=16, qformer_heads=12, detok_heads=12, decode_steps=20, guidance=10.0
)
BLIP2_EXTRAS = {  # BLIP-2 tensors the release carries and the tokenizer does not use
    "Qformer.cls.predictions.bias": (30,),
    "Qformer.bert.embeddings.word_embeddings.weight": (30, 48),
    "Qformer.bert.embeddings.position_embeddings.weight": (16, 48),
    "Qformer.bert.encoder.layer.0.intermediate.dense.weight": (96, 48),
    "Qformer.bert.encoder.layer.0.output.dense.weight": (48, 96),
    "vision_proj.weight": (8, 48),
    "text_proj.weight": (8, 48),
    "itm_head.weight": (2, 48),
    "temp": (),
}


def upstream_state(model: SEED) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        for pattern, replacement in UPSTREAM_NAMES:
            key = re.sub("^" + pattern, replacement, key)
        state[key] = value.clone()
    return state


def write_release(folder, model: SEED, extra_vit_blocks: int = 1, drop: str | None = None):
    """seed_quantizer.pt (bare state_dict, no ViT, BLIP-2 extras, position ids) and eva_vit_g.pth (bare
    float16 ViT state_dict without prefix, with blocks SEED does not run), as the release lays them out."""
    from collections import OrderedDict

    state = upstream_state(model)
    quantizer = OrderedDict((k, v) for k, v in state.items() if not k.startswith("visual_encoder."))
    quantizer["Qformer.bert.embeddings.position_ids"] = torch.arange(16)[None]
    g = torch.Generator().manual_seed(0)
    quantizer.update({k: torch.randn(shape, generator=g) for k, shape in BLIP2_EXTRAS.items()})
    if drop:
        del quantizer[drop]
    vit = OrderedDict(
        (k[len("visual_encoder.") :], v.half()) for k, v in state.items() if k.startswith("visual_encoder.")
    )
    depth = model.config.vit_depth
    for i in range(depth, depth + extra_vit_blocks):
        vit.update(
            {k.replace("blocks.0.", f"blocks.{i}."): v.clone() for k, v in vit.items() if k.startswith("blocks.0.")}
        )
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(quantizer, folder / "seed_quantizer.pt")
    torch.save(vit, folder / "eva_vit_g.pth")
    return folder / "seed_quantizer.pt", folder / "eva_vit_g.pth"


@pytest.fixture(scope="module")
def release_model():
    model = randomized(RELEASE_SHAPED, seed=3)
    with torch.no_grad():  # the ViT ships in float16: use values it can hold
        for name, p in model.named_parameters():
            if name.startswith("visual_encoder."):
                p.copy_(p.half().float())
    return model


def test_the_release_files_convert_into_one_folder_that_encodes_like_the_model(release_model, tmp_path, caplog):
    from zoo.cli import main

    quantizer, vit = write_release(tmp_path / "release", release_model)
    with caplog.at_level(logging.WARNING, logger="vision.seed.convert"):
        code = main(["convert", "seed-tokenizer-2", str(quantizer), "--vit", str(vit), "--out", str(tmp_path / "out")])
    assert code == 0
    loaded = zoo.load(tmp_path / "out")
    assert loaded.config == RELEASE_SHAPED  # image size from pos_embed, 39 blocks and the heads from the release
    batch = pictures(3, seed=4)
    assert torch.equal(loaded.encode(batch).ids, release_model.encode(batch).ids)
    log = caplog.text
    assert "dropping ViT blocks [39]" in log
    ignored = re.search(r"ignoring (\d+) tensors.*?: (.*)", log)
    assert ignored and int(ignored.group(1)) == len(BLIP2_EXTRAS)
    assert sorted(ignored.group(2).split(", ")) == sorted(BLIP2_EXTRAS)
    card = read_card_data(tmp_path / "out" / "README.md")
    assert card["arch"] == "seed" and card["license"] == "apache-2.0"


def test_a_release_file_missing_a_tensor_the_tokenizer_needs_is_refused_and_nothing_is_written(
    release_model, tmp_path, capsys
):
    from zoo.cli import main

    quantizer, vit = write_release(tmp_path / "release", release_model, drop="distill_image_proj.weight")
    code = main(["convert", "seed-tokenizer-2", str(quantizer), "--vit", str(vit), "--out", str(tmp_path / "out")])
    assert code == 2 and "distill_image_proj.weight" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_vit_file_with_fewer_blocks_than_seed_runs_is_refused(release_model, tmp_path):
    from vision.seed.convert import load_release

    quantizer, vit = write_release(tmp_path / "release", release_model, extra_vit_blocks=0)
    state = torch.load(vit, weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("blocks.38.")}, vit)
    with pytest.raises(ConfigError, match="holds 38 ViT blocks; SEED runs 39"):
        load_release(quantizer, vit)


def test_converting_the_release_needs_the_vit_file(release_model, tmp_path):
    from vision.seed.convert import convert_checkpoint

    quantizer, _ = write_release(tmp_path / "release", release_model)
    with pytest.raises(ConfigError, match="--vit"):
        convert_checkpoint("seed-tokenizer-2", quantizer, tmp_path / "out")


def test_an_upstream_state_dict_with_an_unknown_key_is_refused_by_name(model):
    from vision.seed.convert import load_upstream_state

    state = upstream_state(model)
    state["Qformer.bert.encoder.layer.0.surprise.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match="surprise"):
        load_upstream_state(state, TEST_CONFIG)


def test_a_conversion_option_that_is_not_a_release_setting_is_refused_by_name(release_model, tmp_path):
    from vision.seed.convert import convert_checkpoint

    quantizer, vit = write_release(tmp_path / "release", release_model)
    with pytest.raises(ConfigError, match="unknown SEED conversion option.*vit_width.*vit_depth"):
        convert_checkpoint("seed-tokenizer-2", quantizer, tmp_path / "out", vit=vit, vit_width=3)
    assert not (tmp_path / "out").exists()

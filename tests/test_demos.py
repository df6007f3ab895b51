"""The Gradio app: tabs per registered modality, every tab driven through gradio_client, one real browser."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402

from demos.app import HOST, build_app, launch, registered_models, tab_builder  # noqa: E402
from tests.fakes import (  # noqa: E402
    TinyImageVQ,
    TinyLifter,
    TinyLifterConfig,
    TinyPNGVQ,
    TinyVolume,
    TinyVolumeConfig,
    TinyWav,
    make_images,
)

pytestmark = pytest.mark.usefixtures("fakes")

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return str(TinyPNGVQ().save_pretrained(tmp_path_factory.mktemp("models") / "tiny-png-vq"))


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory) -> str:
    return str(TinyWav().save_pretrained(tmp_path_factory.mktemp("models") / "tiny-wav"))


@pytest.fixture(scope="module")
def pose_model(tmp_path_factory) -> str:
    return str(TinyLifter(TinyLifterConfig()).save_pretrained(tmp_path_factory.mktemp("models") / "tiny-lifter"))


@pytest.fixture(scope="module")
def volume_model(tmp_path_factory) -> str:
    return str(TinyVolume(TinyVolumeConfig()).save_pretrained(tmp_path_factory.mktemp("models") / "tiny-volume"))


@pytest.fixture(scope="module")
def served(fakes, image_model, audio_model, pose_model, volume_model):
    """The app with a tab per modality, each with a tiny model, served on 127.0.0.1 in this process."""
    models = {"text": ["byte-utf8"], "image": [image_model], "audio": [audio_model], "pose": [pose_model]}
    models["em_volume"] = [volume_model]
    app = launch(models, port=None, block=False)
    yield app
    app.close()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served.local_url, verbose=False)


def tab_ids(app: gr.Blocks) -> set[str]:
    return {block.id for block in app.blocks.values() if isinstance(block, gr.Tab)}


def test_the_app_has_a_tab_for_each_modality_with_registered_models_and_no_other():
    assert tab_ids(build_app()) == set(registered_models())
    assert tab_ids(build_app({"text": ["byte-utf8"], "pose": []})) == {"text"}


def test_every_event_has_an_api_name_prefixed_by_its_modality(served):
    names = [fn.api_name for fn in served.fns.values()]
    assert sorted(names) == ["audio_tokenize", "em_volume_segment", "image_tokenize", "pose_lift", "text_tokenize"]


def test_the_app_listens_on_localhost_only(served):
    assert served.local_url.startswith(f"http://{HOST}:") and served.server_name == HOST


def test_the_text_tab_colours_each_token_and_reports_fertility(client):
    text = "héllo wörld"
    pieces, stats, ids = client.predict("byte-utf8", text, api_name="/text_tokenize")
    assert "".join(p["token"] for p in pieces) == text
    assert [p["class_or_confidence"] for p in pieces][:3] == ["104", "195 169", "108"]  # é is two bytes
    assert ids == " ".join(str(b) for b in text.encode("utf-8"))
    assert "13 tokens" in stats and "fertility (tokens per word): **6.50**" in stats


@pytest.mark.parametrize("name", registered_models().get("text", []))
def test_every_text_model_s_pieces_in_the_text_tab_put_the_text_back_together(name):
    from demos.tabs.text import tokenize

    text = "Grüße, 東京! tokens"
    pieces, stats, ids = tokenize(name, text)
    assert "".join(piece for piece, _ in pieces) == text
    assert len(ids.split()) == sum(len(label.split()) for _, label in pieces)


def test_the_text_tab_shows_empty_text_as_zero_tokens_without_fertility(client):
    pieces, stats, ids = client.predict("byte-utf8", "", api_name="/text_tokenize")
    assert pieces == [] and ids == ""
    assert "0 tokens" in stats and "fertility" not in stats


def write_png(path: Path) -> str:
    gradient = np.linspace(0, 255, 16 * 16).reshape(16, 16).astype(np.uint8)
    Image.fromarray(gradient).save(path)
    return str(path)


def test_the_image_tab_shows_the_id_grid_and_the_reconstruction_from_all_tokens(client, image_model, tmp_path):
    picture, grid, summary = client.predict(
        image_model, handle_file(write_png(tmp_path / "g.png")), 256, api_name="/image_tokenize"
    )
    ids = [v for row in grid["data"] for v in row if v is not None]
    assert len(ids) == 16 and all(0 <= int(v) < 32 for v in ids)
    assert Image.open(picture).size == (256, 256)  # 8x8, shown enlarged
    assert "**16 tokens**" in summary and "first **16** of 16 tokens" in summary


def test_the_image_tab_says_when_a_model_cannot_decode_a_prefix(client, image_model, tmp_path):
    picture, _, summary = client.predict(
        image_model, handle_file(write_png(tmp_path / "g.png")), 4, api_name="/image_tokenize"
    )
    assert picture is None and "no reconstruction at k=4" in summary


def test_the_audio_tab_reports_tokens_per_second(client, audio_model, tmp_path):
    soundfile.write(tmp_path / "clip.wav", np.sin(np.arange(8000) / 5).astype(np.float32), 16000)
    grid, summary = client.predict(audio_model, handle_file(str(tmp_path / "clip.wav")), api_name="/audio_tokenize")
    assert "**2000 tokens** for 0.50 s: **4000.0 tokens per second**" in summary
    assert sum(v is not None for row in grid["data"] for v in row) == 2000


def test_the_pose_tab_lifts_a_sample_clip_and_lists_its_kept_frames(client, pose_model):
    picture, summary = client.predict(pose_model, None, "sample 1", 3, api_name="/pose_lift")
    assert Image.open(picture).size == (720, 360)
    assert "**10 frames**, 4 joints; **5 tokens** (kept frames: 5)" in summary and "kept: 0, 2, 4, 6, 8" in summary


def test_the_pose_tab_lifts_an_uploaded_keypoint_file(client, pose_model, tmp_path):
    np.save(tmp_path / "clip.npy", np.zeros((6, 4, 2), np.float32))
    _, summary = client.predict(
        pose_model, handle_file(str(tmp_path / "clip.npy")), "(uploaded file)", 0, api_name="/pose_lift"
    )
    assert "**6 frames**" in summary and "kept: 0, 2, 4" in summary


def test_the_em_tab_shows_a_slice_its_token_ids_and_segmentation(client, volume_model):
    picture, summary = client.predict(volume_model, None, "sample 1", 5, api_name="/em_volume_segment")
    assert Image.open(picture).size == (768, 272)  # three panels
    assert "**32 tokens** for a 8x16x16 volume (patch grid 2x4x4)" in summary and "no segment" not in summary


def test_a_modality_without_its_own_tab_gets_the_generic_upload_tab(tmp_path):
    from demos.tabs import load_model
    from demos.tabs.generic import encode_uploaded

    assert tab_builder("hologram").__qualname__ == "make_builder.<locals>.build"
    torch.manual_seed(0)
    folder = str(TinyImageVQ().save_pretrained(tmp_path / "vq"))
    (path,) = make_images(tmp_path, 1)
    grid, summary = encode_uploaded(folder, path)
    assert sum(v is not None for row in grid for v in row) == 16 and "codebook of 32" in summary
    load_model.cache_clear()


@pytest.mark.browser
@pytest.mark.slow
def test_a_real_browser_types_text_and_uploads_an_image_clicks_and_sees_the_outputs(served, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser test needs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served.local_url, wait_until="networkidle")
            page.locator("#text-input textarea").fill("Tokens, please")
            page.locator("#text-tokenize").click()
            ids = page.locator("#text-ids textarea")
            page.wait_for_function(
                "() => document.querySelector('#text-ids textarea')?.value.length > 0", timeout=30000
            )
            assert ids.input_value() == " ".join(str(b) for b in b"Tokens, please")
            assert "14 tokens" in page.locator("#text-stats").inner_text()
            shown = page.locator("#text-tokens").inner_text().split("\n")[1:]  # after the label: a line per token
            assert shown == list("Tokens, please")
            page.screenshot(path=str(tmp_path / "text-tab.png"), full_page=True)

            page.get_by_role("tab", name="Image").click()
            page.locator("#image-input input[type=file]").set_input_files(write_png(tmp_path / "upload.png"))
            page.locator("#image-tokenize").click()
            page.wait_for_function(
                "() => document.querySelector('#image-summary')?.innerText.includes('16 tokens')", timeout=30000
            )
            page.locator("#image-reconstruction img").wait_for(state="visible", timeout=30000)
            assert "first 16 of 16 tokens" in page.locator("#image-summary").inner_text()
            page.screenshot(path=str(tmp_path / "image-tab.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "text-tab.png").stat().st_size > 10_000 and (tmp_path / "image-tab.png").stat().st_size > 10_000

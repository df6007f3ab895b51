"""Captioned scenes for seed-tiny: a count of shapes of one colour in one part of the picture.

"two red circles at the top": count (one to three) x colour (six) x shape (three) x place (five) gives
270 captions, each drawn in many ways (background, sizes, jitter). Everything comes from a seed, so the
training set, the held-out set and the bundled samples can be rebuilt exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COUNTS = ("one", "two", "three")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
PLACES = {  # caption words -> centre of the group, as fractions of the side
    "at the top": (0.5, 0.22),
    "at the bottom": (0.5, 0.78),
    "on the left": (0.22, 0.5),
    "on the right": (0.78, 0.5),
    "in the middle": (0.5, 0.5),
}
VOCABULARY = ("<pad>", *COUNTS, *COLOURS, *(s + "s" for s in SHAPES), *SHAPES, "at", "the", "top", "bottom", "on")
VOCABULARY += ("left", "right", "in", "middle")
CAPTION_LENGTH = 6  # words in the longest caption ("three red circles on the left")


@dataclass(frozen=True)
class Scene:
    count: int
    colour: str
    shape: str
    place: str

    @property
    def caption(self) -> str:
        noun = self.shape if self.count == 1 else self.shape + "s"
        return f"{COUNTS[self.count - 1]} {self.colour} {noun} {self.place}"


def all_scenes() -> list[Scene]:
    """Every caption once, in a fixed order (the candidates of caption retrieval)."""
    return [Scene(n, c, s, p) for n, c, s, p in itertools.product((1, 2, 3), COLOURS, SHAPES, PLACES)]


def caption_ids(captions: list[str]) -> np.ndarray:
    """Captions -> (N, CAPTION_LENGTH) int64 word ids, right-padded with 0."""
    index = {w: i for i, w in enumerate(VOCABULARY)}
    out = np.zeros((len(captions), CAPTION_LENGTH), dtype=np.int64)
    for i, caption in enumerate(captions):
        words = caption.split()
        out[i, : len(words)] = [index[w] for w in words]
    return out


def draw(scene: Scene, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """The scene on a dark or mid-grey background, drawn at 4x and downsampled (antialiased edges)."""
    big = size * 4
    shade = int(rng.integers(20, 110))
    tint = rng.integers(-15, 16, 3)
    background = tuple(int(np.clip(shade + t, 0, 255)) for t in tint)
    image = Image.new("RGB", (big, big), background)
    pen = ImageDraw.Draw(image)
    colour = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[scene.colour])
    cx, cy = (np.array(PLACES[scene.place]) + rng.uniform(-0.04, 0.04, 2)) * big
    radius = big * rng.uniform(0.1, 0.12) if scene.count > 1 else big * rng.uniform(0.14, 0.18)
    spacing = radius * 2.25
    horizontal = scene.place in ("at the top", "at the bottom", "in the middle")
    for k in range(scene.count):
        offset = (k - (scene.count - 1) / 2) * spacing
        x, y = (cx + offset, cy) if horizontal else (cx, cy + offset)
        if scene.shape == "circle":
            pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
        elif scene.shape == "square":
            pen.rectangle([x - radius * 0.9, y - radius * 0.9, x + radius * 0.9, y + radius * 0.9], fill=colour)
        else:
            pen.polygon([(x, y - radius), (x - radius, y + radius * 0.8), (x + radius, y + radius * 0.8)], fill=colour)
    return image.resize((size, size), Image.BILINEAR)


def make_dataset(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, list[Scene]]:
    """(n, size, size, 3) uint8 pictures and their scenes, captions drawn uniformly."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()
    chosen = [scenes[i] for i in rng.integers(0, len(scenes), n)]
    pictures = np.stack([np.asarray(draw(s, rng, size)) for s in chosen])
    return pictures, chosen


def write_samples(folder: Path, seed: int = 2024) -> list[Path]:
    """The bundled demo pictures, named by their captions.

    python -c "from vision.seed.data import write_samples; write_samples('vision/seed/samples')"
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    picks = [Scene(2, "red", "circle", "at the top"), Scene(1, "blue", "square", "in the middle")]
    picks += [Scene(3, "yellow", "triangle", "on the left"), Scene(2, "green", "square", "at the bottom")]
    paths = []
    for scene in picks:
        path = folder / (scene.caption.replace(" ", "_") + ".png")
        draw(scene, rng).save(path)
        paths.append(path)
    return paths

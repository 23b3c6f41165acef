"""The offline corpus's pictures: a coloured shape on the theme's background under the subject's strip."""

import random

from PIL import Image, ImageDraw

from .corpus_text import COLORS, THEMES, Chunk

IMAGE_SIZE = 64


def _subject_strip(draw: ImageDraw.ImageDraw, subject: int, size: int) -> None:
    """The subject's mark: a dark-and-light pattern in a strip along the top edge, one per subject."""
    dark, light, height = (30, 30, 30), (245, 245, 245), size // 6
    for y in range(height):
        for x in range(size):
            on = [True, (x // 4) % 2 == 0, (y // 2) % 2 == 0, (x // 5 + y // 5) % 2 == 0, x < size // 2,
                  ((x + y) // 3) % 2 == 0][subject]
            draw.point((x, y), fill=dark if on else light)


def draw_image(theme: int, subject: int, chunk: Chunk, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    background = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in THEMES[theme][2])
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(6):  # faint texture so no two backgrounds are identical
        x, y = rng.randrange(size), rng.randrange(size)
        tint = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in background)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=tint)
    _subject_strip(draw, subject, size)
    cx = [size // 5, size // 2, size - size // 5][chunk.position] + rng.randint(-2, 2)
    cy = size // 2 + rng.randint(-6, 6)
    r = size // 6 + rng.randint(-1, 2)
    fill = COLORS[chunk.color][2]
    if chunk.shape == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif chunk.shape == 1:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif chunk.shape == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        draw.rectangle((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=fill)
    return image


__all__ = ["draw_image"]

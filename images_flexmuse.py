"""Turn any image a user sends (path, PIL image, numpy array) into an upright RGB PIL image.

Photos arrive grayscale, with alpha, as palettes, in CMYK, with 16-bit channels, rotated by EXIF,
1×1 or 8000×8000. Pillow reads them all; what it does not do on its own is put them into one
form, so the normalisation below is written out. Large images are reduced while decoding where
the format allows it (JPEG draft mode) and always right after, so memory stays bounded.
"""

import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Plenty for CLIP (224 px) and for the article's pictures, small enough to keep 8000×8000 photos cheap.
MAX_SIDE = 2048

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


class ImageLoadError(ValueError):
    """An image that cannot be used; the message names the file or the array."""


def load_image(image: ImageInput, max_side: int = MAX_SIDE) -> Image.Image:
    """Return `image` as an RGB PIL image, EXIF-upright, no side longer than `max_side`."""
    if isinstance(image, (str, os.PathLike)):
        return _load_file(os.fspath(image), max_side)
    if isinstance(image, np.ndarray):
        image = _from_array(image)
    elif not isinstance(image, Image.Image):
        raise ImageLoadError(f"expected an image path, a PIL image or a numpy array, got {type(image).__name__}")
    return _normalize(image, max_side)


def _load_file(path: str, max_side: int) -> Image.Image:
    if not os.path.isfile(path):
        raise ImageLoadError(f"image file not found: {path!r}")
    try:
        with Image.open(path) as img:
            img.draft("RGB", (max_side, max_side))  # JPEG decodes at 1/2..1/8 scale: bounded memory
            return _normalize(img, max_side)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image {path!r}: {err}") from err


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first (CHW) to HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"cannot use an array of shape {array.shape} as an image (need HxW, HxWx3 or HxWx4)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        array = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = _to_uint8(array)
    return Image.fromarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit integer pixels to 8 bits by the dtype's range (65535 for 16-bit)."""
    top = 65535 if array.max(initial=0) <= 65535 else np.iinfo(array.dtype).max
    return (array.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8)


def _normalize(img: Image.Image, max_side: int) -> Image.Image:
    img = ImageOps.exif_transpose(img)  # cameras store rotation in EXIF, not in the pixels
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        img = Image.fromarray(_to_uint8(np.asarray(img)) if img.mode != "F" else _float_to_uint8(np.asarray(img)))
    if img.mode == "P":
        img = img.convert("RGBA")  # palettes may carry transparency
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent areas read as white paper
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return img


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min(initial=0.0)), float(array.max(initial=1.0))
    return ((array - low) / max(high - low, 1e-12) * 255).round().astype(np.uint8)


__all__ = ["ImageLoadError", "MAX_SIDE", "load_image"]

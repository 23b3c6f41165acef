"""Turn any image a user sends (path, PIL image, numpy array, torch tensor) into an upright RGB PIL image.

Photos arrive grayscale, with alpha, as palettes, in CMYK, with 16-bit channels, rotated by EXIF,
1×1 or 8000×8000. Pillow reads them all; what it does not do on its own is put them into one
form, so the normalisation below is written out. Large images are reduced while decoding where
the format allows it (JPEG draft mode) and always right after, so memory stays bounded. What would
be guessed instead is refused: arrays whose value range is not uint8 0–255 or floats in [0, 1], and
animations or multi-page files (which frame?).

A picture already in that form (what `load_image` returns) comes back as it is. The pipelines, the
command and the demo load images to fail early and to keep them for the article, then hand them to
the processor, whose own loading passes them through: each image is opened and normalised once.
"""

import os
from typing import Sequence, Union

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

# Plenty for CLIP (224 px) and for the article's pictures, small enough to keep 8000×8000 photos cheap.
MAX_SIDE = 2048

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


class ImageLoadError(ValueError):
    """An image that cannot be used; the message names the file or the array."""


def load_image(image: ImageInput, max_side: int = MAX_SIDE) -> Image.Image:
    """Return `image` as an RGB PIL image, EXIF-upright, no side longer than `max_side` (`image` itself
    when it already is one)."""
    if isinstance(image, (str, os.PathLike)):
        return _load_file(os.fspath(image), max_side)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image.float() if image.dtype == torch.bfloat16 else image).numpy()  # numpy has no bfloat16
    if isinstance(image, np.ndarray):
        image = _from_array(image)
    elif isinstance(image, Image.Image):
        _check_single_frame(image, "this PIL image")
        if _is_loaded(image, max_side):
            return image
    else:
        raise ImageLoadError(f"expected an image path, a PIL image, a numpy array or a torch tensor, "
                             f"got {type(image).__name__}")
    return _normalize(image, max_side)


def load_images(images: Sequence[ImageInput], max_side: int = MAX_SIDE) -> list[Image.Image]:
    """`load_image` of each; an array's or PIL image's error says which one it is (a file names itself)."""
    pictures = []
    for number, image in enumerate(images, start=1):
        try:
            pictures.append(load_image(image, max_side))
        except ImageLoadError as err:
            if isinstance(image, (str, os.PathLike)):
                raise
            raise ImageLoadError(f"image {number}: {err}") from err
    return pictures


def _load_file(path: str, max_side: int) -> Image.Image:
    if os.path.isdir(path):
        raise ImageLoadError(f"image path is a folder, not an image file: {path!r}")
    if not os.path.exists(path):
        raise ImageLoadError(f"image file not found: {path!r}")
    if not os.path.isfile(path):  # never opened: reading /dev/zero or a pipe might not end
        raise ImageLoadError(f"image path is a device, pipe or socket, not an image file: {path!r}")
    try:
        with Image.open(path) as img:
            _check_single_frame(img, f"image {path!r}")
            img.draft("RGB", (max_side, max_side))  # JPEG decodes at 1/2..1/8 scale: bounded memory
            return _normalize(img, max_side)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image {path!r}: {err}") from err


def _is_loaded(img: Image.Image, max_side: int) -> bool:
    """Whether `_normalize` would only copy `img`: decoded (not a lazily read file), RGB, upright, small enough."""
    return (not isinstance(img, ImageFile.ImageFile) and img.mode == "RGB" and max(img.size) <= max_side
            and img.getexif().get(ExifTags.Base.Orientation, 1) == 1)


def _check_single_frame(img: Image.Image, name: str) -> None:
    frames = getattr(img, "n_frames", 1)
    # an MPO is a camera JPEG whose extra frames are previews of the same photo: its first frame is the photo
    if frames > 1 and img.format != "MPO":
        raise ImageLoadError(f"{name} has {frames} frames (an animation or a multi-page file); "
                             "pass a single-frame image")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first (CHW) to HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"cannot use an array of shape {array.shape} as an image (need HxW, HxWx3 or HxWx4)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        # guessing the range would turn 0–255 floats all white and 0–255 int64 pixels near black
        if not (np.issubdtype(array.dtype, np.floating) and _in_unit_range(array)):
            finite = np.isfinite(array).all()
            values = f"values in [{array.min():g}, {array.max():g}]" if finite else "NaN or infinite values"
            raise ImageLoadError(f"a {array.dtype} array with {values}; pass uint8 0–255 or floats in [0, 1]")
        array = (array * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def _in_unit_range(array: np.ndarray) -> bool:
    return bool(np.isfinite(array).all()) and array.min() >= 0 and array.max() <= 1


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


__all__ = ["ImageLoadError", "MAX_SIDE", "load_image", "load_images"]

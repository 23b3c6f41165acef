"""Images users really send, each handled or refused with a message that names it."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from helpers import make_model, make_pipeline
from images_flexmuse import MAX_SIDE, ImageLoadError, load_image, load_images
from processing_flexmuse import FlexMuseProcessor
from task_flexmuse import FlexMuseWritingPipeline


def _saved(tmp_path, image, name, **save_kwargs):
    path = tmp_path / name
    image.save(path, **save_kwargs)
    return str(path)


def test_grayscale_palette_cmyk_become_rgb(tmp_path):
    gray = load_image(Image.new("L", (5, 4), 77))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (77, 77, 77)
    cmyk = load_image(_saved(tmp_path, Image.new("CMYK", (6, 6), (0, 255, 255, 0)), "c.jpg"))
    assert cmyk.mode == "RGB" and cmyk.getpixel((3, 3))[0] > 200 and cmyk.getpixel((3, 3))[1] < 60  # red
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert load_image(palette).getpixel((0, 0)) == (10, 200, 30)


def test_transparency_reads_as_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    loaded = load_image(_saved(tmp_path, rgba, "a.png"))
    assert loaded.getpixel((1, 1)) == (255, 255, 255) and loaded.getpixel((0, 0)) == (0, 0, 255)
    transparent_palette = Image.new("P", (2, 2), 0)
    transparent_palette.putpalette([9, 9, 9] * 256)
    transparent_palette.info["transparency"] = 0
    assert load_image(_saved(tmp_path, transparent_palette, "p.png")).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_images_scale_to_eight_bits(tmp_path):
    array = np.array([[0, 32896, 65535]], dtype=np.uint16)
    from_file = load_image(_saved(tmp_path, Image.fromarray(array), "deep.png"))
    assert [from_file.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    with pytest.raises(ImageLoadError, match=r"a uint16 array with values in \[0, 65535\]"):  # 16 bits or 12?
        load_image(np.array([[0, 65535]], dtype=np.uint16))


def test_numpy_arrays():
    assert load_image(np.full((3, 4), 0.5, dtype=np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.ones((3, 4), dtype=bool)).getpixel((0, 0)) == (255, 255, 255)
    chw = np.zeros((3, 5, 7), dtype=np.uint8)
    chw[0] = 255
    loaded = load_image(chw)
    assert loaded.size == (7, 5) and loaded.getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ImageLoadError, match=r"shape \(2, 2, 2, 2\)"):
        load_image(np.zeros((2, 2, 2, 2)))


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = _saved(tmp_path, image, "r.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    assert sum(loaded.getpixel((10, 2))) > 600 and sum(loaded.getpixel((10, 38))) < 100  # stripe now on top
    with Image.open(path) as opened:  # decoded RGB, but still to be turned upright
        assert load_image(opened.convert("RGB")).size == (20, 40)


def test_one_pixel_image(tmp_path):
    assert load_image(_saved(tmp_path, Image.new("RGB", (1, 1), (1, 2, 3)), "one.png")).size == (1, 1)


def test_very_large_image_is_reduced_with_bounded_memory(tmp_path):
    path = _saved(tmp_path, Image.new("RGB", (8000, 8000), (20, 120, 220)), "big.jpg", quality=80)
    script = r"""
import json, resource, sys
from images_flexmuse import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": image.size, "grew_mb": (after - before) / 1024}))
"""
    result = json.loads(subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                                       check=True).stdout)
    assert max(result["size"]) == MAX_SIDE
    assert result["grew_mb"] < 120, result  # a full decode alone would take 192 MB


def test_missing_and_corrupt_files_are_named(tmp_path):
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="image file not found: .*nope.jpg"):
        load_image(missing)
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageLoadError, match="cannot read image .*broken.png"):
        load_image(str(corrupt))
    with pytest.raises(ImageLoadError, match="got int"):
        load_image(42)


def test_devices_and_pipes_are_refused_without_being_read(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it waits for a writer forever; a read of /dev/zero has no end
    paths, messages = ["/dev/zero", str(fifo)], []

    def load(path):
        try:
            load_image(path)
        except ImageLoadError as err:
            messages.append(str(err))

    for path in paths:  # in a thread, so that a read that never ends fails the test instead of hanging it
        thread = threading.Thread(target=load, args=(path,), daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), f"load_image({path!r}) is reading a device or a pipe"
    assert messages == [f"image path is a device, pipe or socket, not an image file: {path!r}" for path in paths]


def test_a_loaded_image_is_used_as_it_is(tmp_path, normalised):
    loaded = load_images([_saved(tmp_path, Image.new("RGB", (6, 4)), "a.png"), Image.new("LA", (6, 4)),
                          np.zeros((4, 6, 3), dtype=np.uint8)])
    assert all(again is image for again, image in zip(load_images(loaded), loaded)) and len(normalised) == 3
    with Image.open(tmp_path / "a.png") as opened:  # a file read lazily is loaded, even in RGB
        assert load_image(opened) is not opened and len(normalised) == 4


@pytest.mark.parametrize("path", ["processor", "task pipeline", "FlexMusePipeline"])
def test_each_image_is_normalised_once(path, tmp_path, normalised):
    images = [_saved(tmp_path, Image.new("RGB", (12, 8), (200, 10, 10)), "a.png"),
              Image.new("RGBA", (8, 8), (0, 0, 255, 128)), np.zeros((8, 10, 3), dtype=np.uint8)]
    if path == "processor":
        FlexMuseProcessor.tiny()("topic", images)
    elif path == "task pipeline":
        FlexMuseWritingPipeline(model=make_model(), processor=FlexMuseProcessor.tiny())("topic", images=images,
                                                                                         max_new_tokens=2)
    else:
        make_pipeline(with_t2i=False)("topic", images=images, max_new_tokens=2)
    assert sorted(normalised) == [(8, 8), (10, 8), (12, 8)]

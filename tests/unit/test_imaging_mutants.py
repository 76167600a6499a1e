"""Decoding details pinned to exact values: reasons and their messages, mode conversions, 16-bit and
float mapping, the size checks, EXIF orientation, JPEG draft scaling and the three resize modes."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from aquaflow.data import imaging
from aquaflow.data.imaging import Rejected


def _save(im: Image.Image, fmt="PNG", **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def _reason(fn, *args, **kw) -> tuple[str, str]:
    with pytest.raises(Rejected) as err:
        fn(*args, **kw)
    return err.value.reason, err.value.detail


def test_rejected_message_and_display_path():
    assert (
        str(Rejected("missing", "a.png")) == "missing: a.png" and str(Rejected("zero_bytes")) == "zero_bytes"
    )
    assert Rejected("missing").detail == ""
    assert imaging.display_path(os.fsdecode(b"/d/caf\xe9.jpg")) == "/d/caf\\xe9.jpg"
    assert imaging.display_path(b"/d/a.jpg") == "/d/a.jpg"


def test_read_bytes_reasons(tmp_path):
    assert _reason(imaging.read_bytes, "") == (imaging.BAD_FILE_NAME, "empty path")
    assert _reason(imaging.read_bytes, "a\x00b") == (imaging.BAD_FILE_NAME, "path holds a NUL byte")
    assert _reason(imaging.read_bytes, tmp_path) == (imaging.UNREADABLE, "is a directory")
    assert _reason(imaging.read_bytes, tmp_path / "no.png") == (imaging.MISSING, str(tmp_path / "no.png"))
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    assert _reason(imaging.read_bytes, tmp_path / "link.png") == (
        imaging.BROKEN_LINK,
        f"link target {tmp_path / 'gone.png'} does not exist",
    )
    (tmp_path / "e.png").write_bytes(b"")
    assert _reason(imaging.read_bytes, tmp_path / "e.png") == (imaging.ZERO_BYTES, "")
    (tmp_path / "f.png").write_bytes(b"12345")
    assert imaging.read_bytes(tmp_path / "f.png", max_bytes=5) == b"12345"
    assert _reason(imaging.read_bytes, tmp_path / "f.png", max_bytes=4) == (
        imaging.TOO_LARGE,
        "file of 5 bytes exceeds the 4-byte cap",
    )
    os.mkfifo(tmp_path / "p.png")
    reason, detail = _reason(imaging.read_bytes, tmp_path / "p.png")
    assert reason == imaging.UNREADABLE and detail.startswith("not a regular file (mode prw")


def test_modes_become_rgb8():
    grey = Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L")
    assert imaging.decode(_save(grey)).image.tolist() == [[[0] * 3, [128] * 3, [255] * 3]]
    assert imaging.decode(_save(grey)).mode == "L"
    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 255, 0, 128]]], np.uint8), "RGBA")
    assert imaging.decode(_save(rgba)).image.tolist() == [[[255, 255, 255], [0, 0, 255], [127, 255, 127]]]
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert imaging.decode(_save(pal)).image.tolist() == [[[10, 20, 30], [200, 100, 50]]]
    pal.info["transparency"] = 1
    assert imaging.decode(_save(pal, transparency=1)).image.tolist() == [[[10, 20, 30], [255, 255, 255]]]
    bw = Image.new("1", (2, 1))
    bw.putpixel((0, 0), 1)
    assert imaging.decode(_save(bw)).image.tolist() == [[[255] * 3, [0] * 3]]
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 0, 0))
    assert imaging.decode(_save(cmyk, "JPEG", quality=100)).image.shape == (1, 1, 3)
    i16 = Image.fromarray(np.array([[0, 257, 65535, 128]], np.uint16))
    assert imaging.decode(_save(i16)).image[0, :, 0].tolist() == [0, 1, 255, 0]
    assert imaging.decode(_save(Image.fromarray(np.array([[70000, -5]], np.int32)), "TIFF")).image[
        0, :, 0
    ].tolist() == [
        255,
        0,
    ]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert imaging.decode(_save(floats, "TIFF")).image[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-1.0, 1.0, 3.0]], np.float32), "F")
    assert imaging.decode(_save(wide, "TIFF")).image[0, :, 0].tolist() == [0, 128, 255]
    flat = Image.fromarray(np.array([[5.0, 5.0]], np.float32), "F")
    assert imaging.decode(_save(flat, "TIFF")).image[0, :, 0].tolist() == [0, 0]


def test_int16_and_float_mappings_in_blocks():
    arr = np.arange(0, 65536, 97, dtype=np.int32).reshape(-1, 1)[:600]
    out = imaging._int16_to_rgb8(arr, rows=7)
    assert out.shape == (len(arr), 1, 3) and (out[:, 0, 0] == np.round(arr[:, 0] / 257)).all()
    assert (out[:, 0, 0] == out[:, 0, 2]).all()
    assert imaging._int16_to_rgb8(np.array([[-3, 70000]])).tolist() == [[[0] * 3, [255] * 3]]
    assert imaging._float_to_gray8(np.array([[np.nan, 0.25, 1.0]])).tolist() == [[0, 64, 255]]
    assert imaging._float_to_gray8(np.array([[0.0, 1.5]])).tolist() == [[0, 255]]
    assert imaging._float_to_gray8(np.array([[-0.5, 0.0]])).tolist() == [[0, 255]]


def test_size_checks_and_the_peak_memory_table():
    imaging._check_size(10, 10, 100)
    assert _reason(imaging._check_size, 0, 5, 100) == (imaging.DECODE_ERROR, "empty size 0x5")
    assert _reason(imaging._check_size, 5, 0, 100) == (imaging.DECODE_ERROR, "empty size 5x0")
    assert _reason(imaging._check_size, 11, 10, 100) == (imaging.TOO_LARGE, "11x10 exceeds max_pixels=100")
    imaging._check_size(10, 10, 100, per_pixel=3, max_bytes=300)
    assert _reason(imaging._check_size, 10, 10, 100, per_pixel=3, max_bytes=299) == (
        imaging.TOO_LARGE,
        "10x10 needs ~300 bytes to decode (budget 299)",
    )
    imaging._check_size(10, 10, 100, per_pixel=3, max_bytes=0)  # no budget: no check
    assert [imaging.peak_bytes_per_pixel(m) for m in ("L", "I;16B", "RGB", "RGBA", "F")] == [6, 10, 7, 21, 36]


def test_decode_reasons_and_their_details():
    assert _reason(imaging.decode, b"") == (imaging.ZERO_BYTES, "")
    assert _reason(imaging.decode, b"hello, not an image") == (
        imaging.NOT_AN_IMAGE,
        "not an image format Pillow can read",
    )
    png = _save(Image.new("RGB", (20, 10)))
    assert _reason(imaging.decode, png, max_pixels=199)[0] == imaging.TOO_LARGE
    assert imaging.decode(png, max_pixels=200).image.shape == (10, 20, 3)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    jpeg = _save(Image.fromarray(noise), "JPEG")
    reason, detail = _reason(imaging.decode, jpeg[: len(jpeg) // 2])
    assert reason == imaging.TRUNCATED and detail.startswith(("OSError", "SyntaxError", "ValueError"))
    assert imaging._decode_failure(ValueError("Premature end of data")).reason == imaging.TRUNCATED
    assert imaging._decode_failure(ValueError("broken data stream")).reason == imaging.TRUNCATED
    other = imaging._decode_failure(KeyError("x"))
    assert (other.reason, other.detail) == (imaging.DECODE_ERROR, "KeyError: 'x'")


def test_exif_orientation_swaps_the_reported_size():
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, :5] = 255
    for orientation, shape in ((1, (10, 30, 3)), (3, (10, 30, 3)), (6, (30, 10, 3)), (8, (30, 10, 3))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        d = imaging.decode(_save(Image.fromarray(img), "PNG", exif=exif))
        assert d.image.shape == shape and (d.width, d.height) == (shape[1], shape[0]), orientation


def test_jpeg_draft_keeps_at_least_the_asked_size_and_the_original_size():
    jpeg = _save(Image.new("RGB", (640, 320), (30, 60, 90)), "JPEG")
    d = imaging.decode(jpeg, draft=80)
    assert (d.width, d.height) == (640, 320) and d.image.shape == (80, 160, 3)
    assert imaging.decode(jpeg, draft=81).image.shape == (160, 320, 3)
    assert imaging.decode(jpeg, draft=10).image.shape == (40, 80, 3)  # at most 1/8
    assert imaging.decode(jpeg).image.shape == (320, 640, 3)
    # the budget of a drafted JPEG is that of its smaller size
    assert imaging.decode(jpeg, draft=40, max_bytes=640 * 320 * 7 // 64 + 1).image.shape == (40, 80, 3)
    assert (
        _reason(imaging.decode, jpeg, draft=40, max_bytes=640 * 320 * 7 // 64 - 100)[0] == imaging.TOO_LARGE
    )
    grey = _save(Image.new("L", (64, 64), 7), "JPEG")
    assert imaging.decode(grey, draft=32).image.shape == (32, 32, 3)
    png = _save(Image.new("RGB", (64, 64)))
    assert imaging.decode(png, draft=8).image.shape == (64, 64, 3)  # only JPEGs are drafted


def test_resize_modes_exact_geometry():
    img = np.zeros((10, 20, 3), np.uint8)
    img[:] = (10, 20, 30)
    img[4:6, 9:11] = 255
    boxed = imaging.letterbox(img, 20)
    assert boxed.shape == (20, 20, 3) and boxed[0, 0].tolist() == [10, 20, 30]
    assert boxed[9:11, 9:11].tolist() == [[[255] * 3] * 2] * 2  # centred: pad 5 rows above
    square = np.full((8, 8, 3), 3, np.uint8)
    assert imaging.letterbox(square, 8) is square and imaging.stretch(square, 8) is square
    assert imaging.letterbox(square, 4).shape == (4, 4, 3) and imaging.letterbox(square, 16).shape == (
        16,
        16,
        3,
    )
    assert imaging.stretch(img, 5).shape == (5, 5, 3)
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:, :, 0] = np.arange(40)[:, None] * 5
    crop = imaging.center_crop(tall, 10)
    assert crop.shape == (10, 10, 3) and crop[:, 0, 0].tolist() == list(range(53, 153, 10))  # rows 10..29
    wide = imaging.center_crop(np.zeros((10, 30, 3), np.uint8), 10)
    assert wide.shape == (10, 10, 3)
    assert (
        imaging.center_crop(square, 8) is not None
        and imaging.center_crop(square, 8).tolist() == square.tolist()
    )
    reason, detail = _reason(imaging.center_crop, np.zeros((1, 100000, 3), np.uint8), 224)
    assert reason == imaging.EXTREME_ASPECT and detail.startswith(
        "100000x1: scaling the shorter side to 224 px"
    )


def _tiff(arr: np.ndarray, **kw) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, arr, **kw)
    return out.getvalue()


def test_opencv_fallback_decodes_each_sample_type_exactly():
    """The second decoder (TIFFs Pillow cannot open), called directly: every sample type and channel
    count it takes, to exact RGB values, with the original size and a cv2 mode name."""
    grey = np.array([[0, 10, 255], [1, 2, 3]], np.uint8)
    d = imaging._decode_cv2(_tiff(grey), 10**6, 10**9)
    assert (d.mode, d.width, d.height) == ("cv2:uint8x1", 3, 2)
    assert d.image.dtype == np.uint8 and d.image.tolist() == np.repeat(grey[:, :, None], 3, 2).tolist()
    rgb = np.array([[[255, 0, 0], [0, 128, 9]]], np.uint8)
    d = imaging._decode_cv2(_tiff(rgb, photometric="rgb"), 10**6, 10**9)
    assert (d.mode, d.width, d.height, d.image.tolist()) == ("cv2:uint8x3", 2, 1, rgb.tolist())
    rgba = np.array([[[255, 0, 0, 255], [0, 128, 9, 255]], [[1, 2, 3, 255], [4, 5, 6, 255]]], np.uint8)
    d = imaging._decode_cv2(_tiff(rgba, photometric="rgb"), 10**6, 10**9)
    assert (d.mode, d.image.tolist()) == ("cv2:uint8x4", rgba[:, :, :3].tolist())
    u16 = np.array([[0, 257, 65535, 128, 129, 385]], np.uint16)
    d = imaging._decode_cv2(_tiff(u16), 10**6, 10**9)
    assert d.mode == "cv2:uint16x1" and d.image[0, :, 1].tolist() == [0, 1, 255, 0, 1, 1]
    u16rgb = np.array([[[0, 257, 65535], [128, 129, 514]]], np.uint16)
    assert imaging._decode_cv2(_tiff(u16rgb, photometric="rgb"), 10**6, 10**9).image.tolist() == [
        [[0, 1, 255], [0, 1, 2]]
    ]
    f32 = np.array([[-1.0, 1.0, 3.0]], np.float32)
    d = imaging._decode_cv2(_tiff(f32), 10**6, 10**9)
    assert (d.mode, d.image[0, :, 2].tolist()) == ("cv2:float32x1", [0, 128, 255])
    f32rgb = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    assert imaging._decode_cv2(_tiff(f32rgb, photometric="rgb"), 10**6, 10**9).image.tolist() == [
        [[0, 128, 255]]
    ]
    for arr in (np.array([[1, 2]], np.int32), np.array([[1, -2]], np.int8)):
        assert _reason(imaging._decode_cv2, _tiff(arr), 10**6, 10**9) == (
            imaging.UNSUPPORTED_MODE,
            f"sample type {arr.dtype} with 1 channel(s)",
        )
    assert _reason(imaging._decode_cv2, _tiff(np.zeros((2, 2), np.complex64)), 10**6, 10**9) == (
        imaging.DECODE_ERROR,
        "neither Pillow nor OpenCV can decode this TIFF",
    )


def test_opencv_fallback_checks_pixels_and_decode_budget_from_the_header():
    """Budget: width x height x bytes per pixel (itemsize x samples) x 8."""
    rgb = _tiff(np.zeros((3, 5, 3), np.float32), photometric="rgb")
    need = 5 * 3 * 12 * 8
    assert imaging._decode_cv2(rgb, 15, need).image.shape == (3, 5, 3)
    assert _reason(imaging._decode_cv2, rgb, 15, need - 1) == (
        imaging.TOO_LARGE,
        f"5x3 needs ~{need} bytes to decode (budget {need - 1})",
    )
    assert _reason(imaging._decode_cv2, rgb, 14, 0) == (imaging.TOO_LARGE, "5x3 exceeds max_pixels=14")
    assert imaging._tiff_size(rgb) == (5, 3, 12)
    assert imaging._tiff_size(_tiff(np.zeros((2, 7), np.uint16))) == (7, 2, 2)
    assert _reason(imaging._decode_cv2, b"II*\x00garbage", 10, 10) == (imaging.DECODE_ERROR, "IndexError: 0")
    # through decode: a TIFF Pillow cannot identify goes to OpenCV with decode's limits
    d = imaging.decode(
        _tiff(np.array([[0.0, 0.5]], np.float32), photometric="minisblack", compression="zlib")
    )
    assert d.image[0, :, 0].tolist() == [0, 128]


def test_modes_converted_by_pillow_and_flat_or_unit_floats():
    for mode, colour in (("YCbCr", (100, 90, 160)), ("LAB", (50, 140, 120)), ("HSV", (30, 200, 100))):
        im = Image.new(mode, (2, 1), colour)
        assert imaging._to_rgb8(im).tolist() == np.asarray(im.convert("RGB")).tolist(), mode
    rgbx = Image.new("RGBX", (1, 1), (1, 2, 3, 0))
    assert imaging._to_rgb8(rgbx).tolist() == [[[1, 2, 3]]]
    # float data exactly at the [0, 1] bounds is taken as is; other ranges are stretched
    assert imaging._float_to_gray8(np.array([[0.0, 0.5]], np.float32)).tolist() == [[0, 128]]
    assert imaging._float_to_gray8(np.array([[0.2, 1.0]], np.float32)).tolist() == [[51, 255]]
    stretched = imaging._float_to_gray8(np.array([[-1.0, 3.0]]))
    assert stretched.dtype == np.uint8 and stretched.tolist() == [[0, 255]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a flat image is no 0/0
        flat = imaging._float_to_gray8(np.array([[5.0, 5.0], [5.0, 5.0]]))
    assert flat.dtype == np.uint8 and flat.tolist() == [[0, 0], [0, 0]]
    assert imaging._float_to_gray8(np.array([[0.5]], np.float32)).dtype == np.uint8
    # 16-bit: far-negative values clip to 0, and images taller than one block of rows
    assert imaging._int16_to_rgb8(np.array([[-200, -70000]])).tolist() == [[[0] * 3, [0] * 3]]
    tall = np.full((600, 2), 65535, np.int32)
    assert (imaging._int16_to_rgb8(tall) == 255).all()


def test_letterbox_of_a_tall_image_and_center_crop_of_a_wide_one():
    tall = np.zeros((20, 10, 3), np.uint8)
    tall[:, :, 0] = 40
    tall[:, 4, 0] = 200
    boxed = imaging.letterbox(tall, 20)  # padded only: 5 columns each side
    assert boxed.dtype == np.uint8 and boxed.shape == (20, 20, 3)
    assert boxed[0, :, 0].tolist() == [40] * 9 + [200] + [40] * 10
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, :, 1] = np.arange(30)[None, :] * 8
    crop = imaging.center_crop(wide, 10)  # no resize: columns 10..19
    assert crop[0, :, 1].tolist() == list(range(80, 160, 8))


def test_center_crop_is_torchvision_resize_and_center_crop_pixel_for_pixel():
    from torchvision.transforms import functional as tvf

    rng = np.random.default_rng(3)
    for h, w, size in ((37, 23, 16), (23, 37, 16), (31, 31, 12), (40, 90, 21)):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        pil = tvf.center_crop(tvf.resize(Image.fromarray(img), size, antialias=True), [size, size])
        assert imaging.center_crop(img, size).tolist() == np.asarray(pil).tolist(), (h, w, size)


def test_center_crop_limit_is_the_scaled_copy_in_bytes(monkeypatch):
    from aquaflow.data import limits

    img = np.zeros((10, 30, 3), np.uint8)  # scaled copy: 10 x 30 x 3 = 900 bytes
    monkeypatch.setattr(limits, "CENTER_CROP_BYTES", 900)
    assert imaging.center_crop(img, 10).shape == (10, 10, 3)
    monkeypatch.setattr(limits, "CENTER_CROP_BYTES", 899)
    assert _reason(imaging.center_crop, img, 10) == (
        imaging.EXTREME_ASPECT,
        "30x10: scaling the shorter side to 10 px would make a 10x30 image (limit 899 bytes)",
    )


def test_encode_png_by_default_lossless_and_other_formats():
    img = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    png = imaging.encode(img)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.asarray(Image.open(io.BytesIO(png))).tolist() == img.tolist()
    assert imaging.encode(img, ".jpg").startswith(b"\xff\xd8")
    assert imaging.decode(imaging.encode(img, ".bmp")).image.tolist() == img.tolist()


def test_decode_budget_follows_the_jpeg_draft_scale_exactly():
    """The budget is max_bytes x scale², scale the draft's power of two (1 to 8) still >= draft px."""
    jpeg = _save(Image.new("RGB", (640, 320), (30, 60, 90)), "JPEG")
    need = 640 * 320 * 7
    for draft, scale in ((200, 1), (80, 4), (10, 8)):
        budget = -(-need // (scale * scale))  # the smallest max_bytes that passes
        assert imaging.decode(jpeg, draft=draft, max_bytes=budget).width == 640, draft
        reason, detail = _reason(imaging.decode, jpeg, draft=draft, max_bytes=budget - 1)
        assert (reason, detail) == (
            imaging.TOO_LARGE,
            f"640x320 needs ~{need} bytes to decode (budget {(budget - 1) * scale * scale})",
        ), draft
    png = _save(Image.new("RGB", (20, 10)))
    assert _reason(imaging.decode, png, max_bytes=20 * 10 * 7 - 1)[0] == imaging.TOO_LARGE
    assert _reason(imaging.decode, png, draft=1, max_bytes=20 * 10 * 7 - 1)[0] == imaging.TOO_LARGE
    tiff = _tiff(np.zeros((3, 5, 3), np.float32), photometric="rgb")  # through the OpenCV fallback
    assert _reason(imaging.decode, tiff, max_bytes=5 * 3 * 12 * 8 - 1) == (
        imaging.TOO_LARGE,
        f"5x3 needs ~{5 * 3 * 12 * 8} bytes to decode (budget {5 * 3 * 12 * 8 - 1})",
    )


def test_pillows_decompression_bomb_guard_is_a_too_large_rejection():
    import struct
    import zlib

    png = bytearray(_save(Image.new("L", (1, 1))))
    ihdr = bytearray(png[12:29])  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", 20000, 20000)
    png[12:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    reason, detail = _reason(imaging.decode, bytes(png))
    assert reason == imaging.TOO_LARGE
    assert detail.startswith("Pillow's decompression-bomb guard: Image size (400000000 pixels) exceeds limit")


def test_alpha_modes_on_white_and_a_transparent_bilevel_image():
    cases = (
        ("LA", [(0, 0), (100, 255)], [[255] * 3, [100] * 3]),
        ("RGBa", [(0, 0, 0, 0), (10, 20, 30, 255)], [[255] * 3, [10, 20, 30]]),
    )
    for mode, pixels, want in cases:  # transparent: white; opaque: the colour
        im = Image.new(mode, (2, 1))
        im.putpixel((0, 0), pixels[0])
        im.putpixel((1, 0), pixels[1])
        assert imaging._to_rgb8(im).tolist() == [want], mode
    pa = Image.new("PA", (2, 1))
    pa.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pa.putpixel((0, 0), (1, 255))
    assert imaging._to_rgb8(pa).tolist() == [[[200, 100, 50], [255, 255, 255]]]
    bw = Image.new("1", (2, 1))
    bw.putpixel((1, 0), 1)
    bw.info["transparency"] = 0  # only a palette image's transparency is composited
    assert imaging._to_rgb8(bw).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_exif_orientations_that_mirror_or_transpose():
    img = np.zeros((10, 30, 3), np.uint8)
    img[0, 0] = 255  # a marker in the top-left corner
    for orientation, shape, corner in ((2, (10, 30), (0, 29)), (5, (30, 10), (0, 0)), (7, (30, 10), (29, 9))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        d = imaging.decode(_save(Image.fromarray(img), "PNG", exif=exif))
        assert (d.height, d.width) == d.image.shape[:2] == shape, orientation
        assert np.argwhere(d.image[:, :, 0] == 255).tolist() == [list(corner)], orientation
    jpeg = _save(Image.new("RGB", (640, 320), (30, 60, 90)), "JPEG")
    assert np.abs(imaging.decode(jpeg, draft=80).image[40, 80].astype(int) - [30, 60, 90]).max() <= 3


def test_read_bytes_os_errors_and_a_file_larger_than_its_stat():
    assert _reason(imaging.read_bytes, "a" * 300 + ".png") == (
        imaging.UNREADABLE,
        "OSError: File name too long",
    )
    # /proc files stat as 0 bytes: the read itself is capped
    assert _reason(imaging.read_bytes, "/proc/self/status", max_bytes=10) == (
        imaging.TOO_LARGE,
        "file exceeds the 10-byte cap",
    )


def test_size_check_budget_needs_both_bytes_per_pixel_and_a_budget():
    imaging._check_size(10, 10, 100, per_pixel=3)  # no budget: no check
    imaging._check_size(10, 10, 100, max_bytes=50)  # no bytes per pixel: no check


def _border_median(img: np.ndarray) -> list[int]:
    """The fill colour: per channel, the median of the four edges (corners counted twice)."""
    h, w = img.shape[:2]
    edge = [img[0, x] for x in range(w)] + [img[h - 1, x] for x in range(w)]
    edge += [img[y, 0] for y in range(h)] + [img[y, w - 1] for y in range(h)]
    return np.median(np.array(edge), axis=0).astype(np.uint8).tolist()


def _quartered(blocks: np.ndarray) -> np.ndarray:
    """Each value a 4 x 4 block whose central 2 x 2 is 8 brighter: area mean +2, bilinear +8."""
    img = np.repeat(np.repeat(blocks, 4, 0), 4, 1).astype(np.int32)
    centre = np.zeros((4, 4), np.int32)
    centre[1:3, 1:3] = 8
    img += np.tile(centre, (blocks.shape[0], blocks.shape[1]))[:, :, None]
    return img.astype(np.uint8)


def test_letterbox_fill_padding_and_interpolation_exactly(monkeypatch):
    from aquaflow.data import limits

    rng = np.random.default_rng(5)
    img = rng.integers(0, 200, (6, 10, 3), dtype=np.uint8)
    fill = _border_median(img)
    boxed = imaging.letterbox(img, 10)  # padding only: 2 rows above, 2 below
    assert boxed.dtype == np.uint8 and boxed[2:8].tolist() == img.tolist()
    assert boxed[[0, 1, 8, 9]].reshape(-1, 3).tolist() == [fill] * 40
    blocks = rng.integers(0, 200, (2, 2, 3), dtype=np.uint8)
    square = _quartered(blocks)  # 8 x 8 down to 2 x 2: area averaging, not bilinear sampling
    assert imaging.letterbox(square, 2).tolist() == (blocks.astype(int) + 2).tolist()
    up = imaging.letterbox(np.array([[[0] * 3, [100] * 3], [[100] * 3, [0] * 3]], np.uint8), 4)
    assert 0 < up[1, 1, 0] < 100  # enlarged bilinearly, not by repeating pixels

    # an image whose square would pass the canvas cap: resized first (area), then padded
    monkeypatch.setattr(limits, "LETTERBOX_CANVAS_BYTES", 16 * 16 * 3 - 1)
    blocks = rng.integers(0, 200, (2, 4, 3), dtype=np.uint8)
    wide = _quartered(blocks)  # 8 x 16 -> 2 x 4 inside a 4 x 4 canvas
    out = imaging.letterbox(wide, 4)
    assert out.dtype == np.uint8 and out[1:3].tolist() == (blocks.astype(int) + 2).tolist()
    assert out[[0, 3]].reshape(-1, 3).tolist() == [_border_median(wide)] * 8
    line = np.full((1, 40, 3), 9, np.uint8)  # the short side rounds to 0 px: kept at 1
    monkeypatch.setattr(limits, "LETTERBOX_CANVAS_BYTES", 0)
    thin = imaging.letterbox(line, 10)
    assert thin.shape == (10, 10, 3) and thin[4].tolist() == [[9] * 3] * 10


def test_letterbox_canvas_cap_boundary_and_a_one_pixel_wide_image(monkeypatch):
    from aquaflow.data import limits

    img = np.random.default_rng(6).integers(0, 255, (3, 7, 3), dtype=np.uint8)
    padded_first = imaging.letterbox(img, 5)  # the 7 x 7 canvas is 147 bytes
    monkeypatch.setattr(limits, "LETTERBOX_CANVAS_BYTES", 147)
    assert imaging.letterbox(img, 5).tolist() == padded_first.tolist()
    monkeypatch.setattr(limits, "LETTERBOX_CANVAS_BYTES", 146)
    assert imaging.letterbox(img, 5).tolist() != padded_first.tolist()  # resized first
    monkeypatch.setattr(limits, "LETTERBOX_CANVAS_BYTES", 0)
    tall = np.zeros((40, 1, 3), np.uint8)
    tall[20:] = 200  # fill: the median, 100; the image stays one column wide
    out = imaging.letterbox(tall, 10)
    assert out[:, 4, 0].tolist() == [0] * 5 + [200] * 5
    assert (out[:, [3, 5], 0] == 100).all()
    assert imaging._to_rgb8(Image.fromarray(np.zeros((2, 3), np.float32), "F")).shape == (2, 3, 3)

"""Image decoding that never crashes: every input becomes an 8-bit RGB array or a rejection reason."""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aquaflow.data import limits

cv2.setNumThreads(1)  # decode/resize run inside DataLoader workers: one thread each

# Pillow's own decompression-bomb guard stays on (Image.MAX_IMAGE_PIXELS is never changed here):
# Pillow refuses more than 2 x MAX_IMAGE_PIXELS = 178,956,970 px while reading the header. Our
# `max_pixels` (default: that same number) is checked from the header too, before any pixel is
# decoded, by every decoder: Pillow, and the OpenCV fallback for TIFFs Pillow cannot read.
PILLOW_LIMIT = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
DEFAULT_MAX_PIXELS = 178_956_970
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")

# Rejection reasons (the `reason` column of rejected.parquet).
MISSING = "missing"
BROKEN_LINK = "broken_link"
UNREADABLE = "unreadable"
ZERO_BYTES = "zero_bytes"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
UNSUPPORTED_MODE = "unsupported_mode"
DECODE_ERROR = "decode_error"
BAD_FILE_NAME = "bad_file_name"  # empty, or holding a NUL byte: no file can have that name
BAD_CROP_BOX = "bad_crop_box"  # a crop row (FlowCam) whose box is missing, empty or off the image
EXTREME_ASPECT = "extreme_aspect"  # a valid image too elongated for the model's resize (center_crop)
REASONS = (
    MISSING,
    BROKEN_LINK,
    UNREADABLE,
    ZERO_BYTES,
    NOT_AN_IMAGE,
    TRUNCATED,
    TOO_LARGE,
    UNSUPPORTED_MODE,
    DECODE_ERROR,
    BAD_FILE_NAME,
    BAD_CROP_BOX,
    EXTREME_ASPECT,
)


class Rejected(Exception):
    """An input that cannot become an image; `reason` is one of REASONS, `detail` says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    image: np.ndarray  # H x W x 3 uint8 RGB
    width: int  # original width / height (before any draft down-scaling)
    height: int
    mode: str  # original PIL mode, e.g. "L", "RGB", "I;16"


def display_path(path: str | bytes | os.PathLike) -> str:
    """A path as valid UTF-8 text: undecodable bytes (a Latin-1 name from an old instrument PC,
    surrogate-escaped by Python) become backslash escapes, e.g. b'caf\\xe9.jpg' -> 'caf\\\\xe9.jpg'."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_bytes(path: str | bytes | os.PathLike, max_bytes: int | None = None) -> bytes:
    """Read a file, turning every failure into a Rejected with a reason.

    The file is stat-ed first: only regular files are read (a FIFO named like an image would
    block the reader forever; a device would never end), and only up to `max_bytes` (too_large;
    default limits.MAX_FILE_BYTES, the use case's `limits.max_file_mb`).
    """
    max_bytes = limits.MAX_FILE_BYTES if max_bytes is None else max_bytes
    raw = os.fsencode(path)
    if not raw or b"\x00" in raw:
        raise Rejected(BAD_FILE_NAME, "path holds a NUL byte" if raw else "empty path")
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise Rejected(UNREADABLE, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise Rejected(UNREADABLE, f"not a regular file (mode {stat.filemode(st.st_mode)})")
        if st.st_size > max_bytes:
            raise Rejected(TOO_LARGE, f"file of {st.st_size} bytes exceeds the {max_bytes}-byte cap")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)  # a file that grew since the stat is still capped
        if len(data) > max_bytes:
            raise Rejected(TOO_LARGE, f"file exceeds the {max_bytes}-byte cap")
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise Rejected(
                BROKEN_LINK, f"link target {display_path(os.readlink(path))} does not exist"
            ) from exc
        raise Rejected(MISSING, display_path(path)) from exc
    except IsADirectoryError as exc:
        raise Rejected(UNREADABLE, "is a directory") from exc
    except OSError as exc:
        raise Rejected(UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if not data:
        raise Rejected(ZERO_BYTES)
    return data


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode we can interpret into H x W x 3 uint8."""
    mode = im.mode
    if mode in ("RGB",):
        return np.asarray(im)
    if mode == "L":  # grey replicated into 3 channels, as convert("RGB") does, without its 4-byte copy
        return np.repeat(np.asarray(im)[:, :, None], 3, axis=2)
    if mode in ("1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        if mode == "P" and "transparency" in im.info:
            return _to_rgb8(im.convert("RGBA"))
        return np.asarray(im.convert("RGB"))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if arr.ndim != 2:
            raise Rejected(UNSUPPORTED_MODE, f"mode {mode} with shape {arr.shape}")
        if mode == "F":
            return np.repeat(_float_to_gray8(arr)[:, :, None], 3, axis=2)
        return _int16_to_rgb8(arr)
    raise Rejected(UNSUPPORTED_MODE, f"PIL mode {mode!r}")


def _int16_to_rgb8(arr: np.ndarray, rows: int = 256) -> np.ndarray:
    """16-bit (or 32-bit int holding 16-bit data) grey -> RGB uint8 by the fixed mapping
    0..65535 -> 0..255, i.e. round(v / 257) (never a tie: 257 is odd), a block of rows at a time
    so the temporaries stay a few MB whatever the image size."""
    h, w = arr.shape
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, rows):
        block = np.clip(arr[y : y + rows], 0, 65535).astype(np.uint32)
        out[y : y + rows] = ((block + 128) // 257).astype(np.uint8)[:, :, None]
    return out


def _float_to_gray8(arr: np.ndarray) -> np.ndarray:
    """Float data: [0, 1] is taken as is, any other range is stretched min..max."""
    arr = np.nan_to_num(arr.astype(np.float64))
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return (arr * 255.0).round().astype(np.uint8)
    return (
        ((arr - lo) / (hi - lo) * 255.0).round().astype(np.uint8)
        if hi > lo
        else np.zeros(arr.shape, np.uint8)
    )


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def _tiff_size(data: bytes) -> tuple[int, int, int]:
    """Width, height and bytes per pixel of a TIFF's first image, read from its header (tifffile)."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            page = tf.pages.first
            return int(page.imagewidth), int(page.imagelength), page.dtype.itemsize * page.samplesperpixel
    except Exception as exc:
        raise _decode_failure(exc) from exc


# Peak bytes per pixel of decoding + converting to RGB uint8, per PIL mode: measured peak RSS of
# `decode` on 16 Mpx images (tests/unit/test_limits.py), rounded up by about 10%.
_PEAK_BYTES_PER_PIXEL = {"1": 11, "L": 6, "P": 11, "I;16": 10, "I": 16, "F": 36, "RGB": 7}
_PEAK_DEFAULT = 21  # RGBA (alpha compositing: 19 measured), CMYK, LA, ...
_PEAK_PER_SAMPLE_BYTE = 8  # OpenCV-decoded TIFFs: x the bytes of one pixel (float RGB: 7 x 12 measured)


def peak_bytes_per_pixel(mode: str) -> int:
    """Estimated peak bytes per pixel of decoding an image of PIL `mode` to RGB uint8."""
    return _PEAK_BYTES_PER_PIXEL.get("I;16" if mode.startswith("I;16") else mode, _PEAK_DEFAULT)


def _check_size(width: int, height: int, max_pixels: int, per_pixel: int = 0, max_bytes: int = 0) -> None:
    """Reject from the header: an empty size, more than max_pixels, or more than max_bytes to decode."""
    if width <= 0 or height <= 0:
        raise Rejected(DECODE_ERROR, f"empty size {width}x{height}")
    if width * height > max_pixels:
        raise Rejected(TOO_LARGE, f"{width}x{height} exceeds max_pixels={max_pixels}")
    if max_bytes and width * height * per_pixel > max_bytes:
        need = width * height * per_pixel
        raise Rejected(TOO_LARGE, f"{width}x{height} needs ~{need} bytes to decode (budget {max_bytes})")


def _decode_cv2(data: bytes, max_pixels: int, max_bytes: int) -> Decoded:
    """Second attempt for TIFFs Pillow cannot open (float, 32-bit int, odd sample layouts).

    The size comes from the TIFF header before OpenCV decodes a single pixel.
    """
    width, height, pixel_bytes = _tiff_size(data)
    _check_size(width, height, max_pixels, pixel_bytes * _PEAK_PER_SAMPLE_BYTE, max_bytes)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise Rejected(DECODE_ERROR, "neither Pillow nor OpenCV can decode this TIFF")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, ch = arr.shape
    mode = f"cv2:{arr.dtype}x{ch}"
    if ch not in (1, 3, 4):
        raise Rejected(UNSUPPORTED_MODE, f"{ch} channels")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr / 257.0).round().astype(np.uint8)
    elif arr.dtype.kind == "f":
        out = _float_to_gray8(arr)
    else:
        raise Rejected(UNSUPPORTED_MODE, f"sample type {arr.dtype} with {ch} channel(s)")
    if ch == 1:
        out = np.repeat(out, 3, axis=2)
    else:
        out = cv2.cvtColor(out, cv2.COLOR_BGRA2RGB if ch == 4 else cv2.COLOR_BGR2RGB)
    return Decoded(np.ascontiguousarray(out), w, h, mode)


def _decode_failure(exc: Exception) -> Rejected:
    msg = f"{type(exc).__name__}: {exc}"
    if any(k in msg.lower() for k in ("truncated", "broken data stream", "premature end")):
        return Rejected(TRUNCATED, msg)
    return Rejected(DECODE_ERROR, msg)


def decode(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: int | None = None,
    max_bytes: int | None = None,
) -> Decoded:
    """Decode encoded image bytes to RGB uint8; raise Rejected with a reason on failure.

    The size is checked from the header before decoding (Pillow's own guard, then `max_pixels`,
    then `max_bytes`: the estimated peak memory of decoding, see `peak_bytes_per_pixel`).
    Pillow first; TIFFs it cannot open get a second try with OpenCV. EXIF orientation is applied
    (the array is what a viewer shows). 16-bit data maps to 8 bits by a fixed division
    (0..65535 -> 0..255), so intensities stay comparable between images.
    `draft`: for JPEGs, let the decoder down-scale by a power of two while staying >= draft px.
    `max_bytes` defaults to limits.MAX_DECODED_BYTES (the use case's `limits.max_decoded_mb`).
    """
    max_bytes = limits.MAX_DECODED_BYTES if max_bytes is None else max_bytes
    if not data:
        raise Rejected(ZERO_BYTES)
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise Rejected(TOO_LARGE, f"Pillow's decompression-bomb guard: {exc}") from exc
    except UnidentifiedImageError as exc:
        if data[:4] in TIFF_MAGIC:
            return _decode_cv2(data, max_pixels, max_bytes)
        raise Rejected(NOT_AN_IMAGE, "not an image format Pillow can read") from exc
    except Exception as exc:
        raise _decode_failure(exc) from exc
    width, height = im.size
    mode = im.mode
    # a JPEG the decoder down-scales (draft) costs the budget of its smaller size
    scale = 1
    if draft and im.format == "JPEG":
        while min(width, height) // (scale * 2) >= draft and scale < 8:
            scale *= 2
    _check_size(width, height, max_pixels, peak_bytes_per_pixel(mode), max_bytes * scale * scale)
    try:
        if draft and im.format == "JPEG":
            im.draft("RGB" if mode != "L" else "L", (draft, draft))
        im.load()
        orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
    except Image.DecompressionBombError as exc:  # e.g. a GIF frame larger than its header said
        raise Rejected(TOO_LARGE, f"Pillow's decompression-bomb guard: {exc}") from exc
    except Exception as exc:
        raise _decode_failure(exc) from exc
    try:
        arr = _to_rgb8(im)
    except Rejected:
        raise
    except Exception as exc:  # a mode Pillow cannot convert
        raise Rejected(UNSUPPORTED_MODE, f"PIL mode {mode!r}: {exc}") from exc
    return Decoded(np.ascontiguousarray(arr), width, height, mode)


def load(path: str | bytes | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    return decode(read_bytes(path), max_pixels)


def _pad_square(image: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Centre the image on a square canvas of its longer side, filled with `fill`."""
    h, w = image.shape[:2]
    side = max(h, w)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = fill
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = image
    return canvas


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square with the median border colour (keeps aspect ratio), then resize to size.

    While the square fits in limits.LETTERBOX_CANVAS_BYTES this is exactly pad-then-resize; a
    larger image is first resized so its longer side is `size` (the same geometry, to within a
    pixel's rounding), then padded: memory stays size x size whatever the aspect ratio."""
    h, w = image.shape[:2]
    side = max(h, w)
    if h == w and side == size:
        return image
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]], axis=0)
    fill = np.median(border, axis=0).astype(np.uint8)
    if side * side * 3 > limits.LETTERBOX_CANVAS_BYTES:
        scale = size / side
        dsize = (max(1, round(w * scale)), max(1, round(h * scale)))
        return _pad_square(cv2.resize(image, dsize, interpolation=cv2.INTER_AREA), fill)
    if h != w:
        image = _pad_square(image, fill)
    if side != size:
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp)
    return image


def stretch(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size ignoring the aspect ratio, bilinear (cv2.INTER_LINEAR): what
    planktonclas (albumentations Resize) feeds its Keras models."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size`, then the central size x size: torchvision's Resize(size) +
    CenterCrop(size) on a PIL image (Pillow bilinear, antialiased; the longer side truncated, the
    crop offset rounded), i.e. Ultralytics' classification preprocessing, pixel for pixel.
    An image so elongated that the scaled copy would pass limits.CENTER_CROP_BYTES is rejected
    (extreme_aspect)."""
    h, w = image.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    if size * new_long * 3 > limits.CENTER_CROP_BYTES:
        raise Rejected(
            EXTREME_ASPECT,
            f"{w}x{h}: scaling the shorter side to {size} px would make a {size}x{new_long} image "
            f"(limit {limits.CENTER_CROP_BYTES} bytes)",
        )
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
    return np.ascontiguousarray(image[top : top + size, left : left + size])


RESIZE = {"letterbox": letterbox, "stretch": stretch, "center_crop": center_crop}  # model card `resize`


def encode(image: np.ndarray, fmt: str = ".png") -> bytes:
    """Encode an RGB uint8 array (PNG by default, lossless)."""
    ok, buf = cv2.imencode(fmt, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode image as {fmt}")
    return buf.tobytes()

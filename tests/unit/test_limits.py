"""Memory guards on untrusted inputs (aquaflow.data.limits), each measured: the proof-of-concept file
of the guard is handled in a fresh Python process whose peak RSS above its baseline (after imports,
before the file is touched) must stay under a stated bound."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from aquaflow.data import imaging, limits
from aquaflow.data.fetch import FetchError, fetch
from aquaflow.engine.items import Items

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
MB = 1 << 20


def peak_above_baseline(setup: str, action: str) -> tuple[str, float]:
    """Run `setup` (imports), then `action` (sets `result`) in a child process; return (result,
    the child's peak RSS growth during `action` in MB). The peak is VmHWM of /proc/self/status,
    which belongs to the child's own memory map (getrusage's ru_maxrss survives exec: a child of
    pytest would report pytest's own peak)."""
    code = f"""
import json, sys
sys.path.insert(0, {str(SCRIPTS)!r})
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
{textwrap.dedent(setup)}
base = hwm()
try:
{textwrap.indent(textwrap.dedent(action), "    ")}
except Exception as exc:
    result = f"{{type(exc).__name__}}: {{exc}}"
peak = hwm()
print(json.dumps({{"result": str(result), "mb": (peak - base) / 1024}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["result"], got["mb"]


def png_strip(path: Path, width: int) -> Path:
    Image.fromarray(np.full((1, width), 90, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("width", [16000, 50000])
def test_letterbox_of_a_one_pixel_high_strip_stays_small(tmp_path, width):
    """Training and the drift reference letterbox decoded files: a 131-byte 16000x1 PNG used to
    cost ~0.7 GB (50000x1: ~7.5 GB) for the padded square; now it is resized first."""
    path = png_strip(tmp_path / "strip.png", width)
    assert path.stat().st_size < 200
    result, mb = peak_above_baseline(
        "from aquaflow.data import imaging",
        f"result = imaging.letterbox(imaging.load({str(path)!r}).image, 224).shape",
    )
    print(f"letterbox {width}x1: peak +{mb:.1f} MB")
    assert result == "(224, 224, 3)"
    assert mb < 300


def test_letterbox_below_the_canvas_limit_is_unchanged_pad_then_resize():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    ref = np.full(
        (500, 500, 3),
        np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]), axis=0).astype(np.uint8),
    )
    ref[100:400] = img
    import cv2

    assert np.array_equal(
        imaging.letterbox(img, 224), cv2.resize(ref, (224, 224), interpolation=cv2.INTER_AREA)
    )
    big = np.full((1, 9000, 3), 7, np.uint8)  # 9000^2 x 3 bytes > LETTERBOX_CANVAS_BYTES: resized first
    out = imaging.letterbox(big, 64)
    assert out.shape == (64, 64, 3) and (out == 7).all()


def test_an_elongated_image_gets_a_true_reason_at_inference(tmp_path):
    """An extreme aspect ratio used to be rejected as decode_error with an OpenCV assertion (the
    drift statistics resized a 1-px strip to 0 px): letterbox and stretch now predict it, and
    center_crop, whose scaled copy would be 224 x 3.6 M px, rejects it as extreme_aspect."""
    path = str(png_strip(tmp_path / "strip.png", 16000))
    for resize in ("letterbox", "stretch"):
        _i, image, _digest, reason, detail, stats = Items([path], [None], 64, 10**9, resize)[0]
        assert (reason, detail) == ("", ""), resize
        assert image.shape == (64, 64, 3) and stats[1] == pytest.approx(16000.0)
    *_, reason, detail, _stats = Items([path], [None], 224, 10**9, "center_crop")[0]
    assert reason == imaging.EXTREME_ASPECT and "OpenCV" not in detail and "16000x1" in detail


def test_16_bit_tiff_decodes_within_its_budget(tmp_path):
    """A ~32 KB compressed 16-bit TIFF of 16 Mpx took 338 MB to decode (int64 and float64 copies);
    it is now converted in row blocks, and its estimated need is checked against the budget."""
    path = tmp_path / "gray16.tif"
    tifffile.imwrite(path, np.zeros((4000, 4000), np.uint16), compression="zlib")
    assert path.stat().st_size < 64_000
    result, mb = peak_above_baseline(
        "from aquaflow.data import imaging", f"result = imaging.load({str(path)!r}).image.shape"
    )
    print(f"16-bit TIFF 16 Mpx ({path.stat().st_size} bytes): peak +{mb:.1f} MB")
    assert result == "(4000, 4000, 3)"
    assert mb < 200
    assert imaging.peak_bytes_per_pixel("I;16") * 16e6 <= limits.MAX_DECODED_BYTES
    # the same file under a smaller budget: refused from its header, nothing decoded
    result, mb = peak_above_baseline(
        "from aquaflow.data import imaging",
        f"result = imaging.decode(open({str(path)!r}, 'rb').read(), max_bytes=100_000_000)",
    )
    assert result.startswith("Rejected: too_large") and "budget 100000000" in result
    assert mb < 20


def test_values_of_16_bit_conversion_are_round_v_over_257():
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = imaging.decode(_png16(v)).image
    assert np.array_equal(out[:, :, 0], np.round(v / 257.0).astype(np.uint8))
    assert np.array_equal(out[:, :, 0], out[:, :, 2])


def _png16(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_a_file_over_the_cap_is_refused_unread(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as fh:  # sparse: no disk used
        fh.truncate(limits.MAX_FILE_BYTES + 1)
    result, mb = peak_above_baseline(
        "from aquaflow.data import imaging", f"result = len(imaging.read_bytes({str(path)!r}))"
    )
    assert result.startswith("Rejected: too_large") and "cap" in result
    assert mb < 20
    os.unlink(path)


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    """A 306 KB zip used to unpack to 315 MB; the ratio is read from the zip's index first."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(3):
            zf.writestr(f"img_{i}.tif", bytes(100 * MB))
    assert archive.stat().st_size < 1 * MB
    with pytest.raises(FetchError, match="decompression bomb"):
        fetch({"kind": "path", "path": str(archive)}, tmp_path / "raw", tmp_path / "cache")
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path / ".raw.partial").exists()


@pytest.mark.parametrize("entry_side", [40, 12000, 30000])
def test_a_coco_rle_mask_is_checked_against_its_image_before_decoding(tmp_path, entry_side):
    """An RLE of a few bytes claiming 30000 x 30000 px used to be decoded at that size (~1.8 GB with
    its copy); it must match its image entry, stay under limits.MAX_MASK_PIXELS, and the entry must
    match the image file's header (12000: under the cap, the 40 x 40 file betrays the lie)."""
    import json

    import cv2
    from pycocotools import mask as mask_utils

    side = entry_side if entry_side > 40 else 30000
    rle = mask_utils.frPyObjects({"counts": [side * side], "size": [side, side]}, side, side)
    rle["counts"] = rle["counts"].decode()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 40, 3), np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": entry_side, "height": entry_side}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "bbox": [0, 0, 4, 4]}
        ],
        "categories": [{"id": 1, "name": "coral"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    assert (tmp_path / "a.json").stat().st_size < 500
    result, mb = peak_above_baseline(
        "from aquaflow.tasks.detect import formats",
        f"result = formats.read_coco({str(tmp_path / 'a.json')!r}, {str(tmp_path)!r}, 'segment')",
    )
    print(f"COCO RLE {side}x{side} on a 40x40 image (entry {entry_side}): peak +{mb:.1f} MB")
    reasons = ("RLE size", "its entry says", "exceeds 178956970 px")
    assert result.startswith("LabelError") and any(r in result for r in reasons), result
    assert mb < 300


def test_a_scan_compressed_in_strips_is_read_strip_by_strip(tmp_path):
    """A compressed scan (12000 x 12000 px, 144 MB decoded; a 2400 dpi ZooScan scan is 356 Mpx)
    used to be decoded whole: each range of rows now decodes only its own strips."""
    path = tmp_path / "scan.tif"
    tifffile.imwrite(
        path,
        np.full((12000, 12000), 200, np.uint8),
        compression="zlib",
        compressionargs={"level": 1},
        rowsperstrip=256,
    )
    assert path.stat().st_size < 2 * MB
    result, mb = peak_above_baseline(
        "from aquaflow.preprocess.scan import StripReader",
        f"""
        r = StripReader({str(path)!r})
        ranges = [(y, min(r.height, y + 1024)) for y in range(0, r.height, 1000)]
        result = sum(int(r.rows(a, b).sum(dtype="int64")) for a, b in ranges)
        """,
    )
    print(f"compressed 12000x12000 scan read in 1024-row ranges: peak +{mb:.1f} MB")
    expected = sum(200 * 12000 * (min(12000, y + 1024) - y) for y in range(0, 12000, 1000))
    assert result == str(expected)
    assert mb < 100


def test_strip_reads_of_a_compressed_scan_equal_the_whole_decode(tmp_path):
    from aquaflow.preprocess.scan import StripReader

    scan = (np.arange(300 * 70, dtype=np.uint32).reshape(300, 70) % 65521).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", scan, compression="zlib", rowsperstrip=16)
    r = StripReader(tmp_path / "s.tif")
    assert r._strip_rows == 16 and (r.height, r.width) == (300, 70)
    for y0, y1 in [(0, 300), (15, 17), (290, 300), (31, 33), (100, 101)]:
        assert np.array_equal(r.rows(y0, y1), scan[y0:y1]), (y0, y1)


def test_a_scan_that_can_only_be_decoded_whole_is_checked_from_its_header(tmp_path):
    """One compressed strip (or a PNG) cannot be read in parts: over the limit it is refused with a
    reason that says how to save it, before a pixel is decoded."""
    from PIL import Image as PILImage

    tif, png = tmp_path / "one_strip.tif", tmp_path / "scan.png"
    tifffile.imwrite(tif, np.zeros((4000, 4000), np.uint8), compression="zlib", rowsperstrip=4000)
    PILImage.new("L", (4000, 4000)).save(png)
    for path in (tif, png):
        result, mb = peak_above_baseline(
            "from aquaflow.preprocess.scan import StripReader",
            f"result = StripReader({str(path)!r}, max_whole_bytes=8 * 2**20).shape",
        )
        assert result.startswith("ValueError") and "can only be decoded whole" in result, result
        assert "rowsperstrip" in result and mb < 20


def test_a_use_case_s_limits_reach_the_guards(tmp_path):
    """limits.configure (what the step scripts call with the use case's `limits`) moves each guard:
    a 2 MiB file, a 1000x1000 RGB image and a zip unpacking 3 times its size pass at the defaults and are
    refused under 1 MiB limits and a ratio of 2; None restores the defaults."""
    sparse = tmp_path / "two_mib.png"
    with open(sparse, "wb") as fh:
        fh.truncate(2 * MB)
    buf = io.BytesIO()
    Image.fromarray(np.full((1000, 1000, 3), 90, np.uint8)).save(buf, "PNG")
    archive = tmp_path / "zeros.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.tif", np.random.default_rng(0).bytes(MB) + bytes(2 * MB))  # ratio about 3
    try:
        limits.configure({"max_file_mb": 1, "max_decoded_mb": 1, "max_unpack_ratio": 2})
        assert (limits.MAX_FILE_BYTES, limits.MAX_DECODED_BYTES, limits.MAX_UNPACK_RATIO) == (MB, MB, 2)
        assert limits.MAX_WHOLE_SCAN_BYTES == 1 << 30  # a key left out keeps its default
        with pytest.raises(imaging.Rejected, match="too_large"):
            imaging.read_bytes(sparse)
        with pytest.raises(imaging.Rejected, match="too_large"):
            imaging.decode(buf.getvalue())
        with pytest.raises(FetchError, match="decompression bomb"):
            fetch({"kind": "path", "path": str(archive)}, tmp_path / "raw", tmp_path / "cache")
        with pytest.raises(ValueError, match="max_file_gb"):
            limits.configure({"max_file_gb": 1})
    finally:
        limits.configure(None)
    assert len(imaging.read_bytes(sparse)) == 2 * MB
    assert imaging.decode(buf.getvalue()).image.shape == (1000, 1000, 3)
    fetch({"kind": "path", "path": str(archive)}, tmp_path / "raw", tmp_path / "cache")
    assert (tmp_path / "raw/a.tif").stat().st_size == 3 * MB


def test_a_tiled_compressed_16_bit_tiff_over_the_budget_is_refused_from_its_header(tmp_path):
    """A tiled, zlib-compressed 16-bit TIFF of 10600 x 10600 px (112 Mpx, a few hundred KB) would
    need ~1.1 GB to decode (10 bytes per 16-bit pixel, measured): its header is enough to refuse
    it under the default 1 GiB budget, before a tile is decoded."""
    path = tmp_path / "tiled16.tif"
    side, tile = 10600, 512
    per_side = (side + tile - 1) // tile
    tiles = (np.zeros((tile, tile), np.uint16) for _ in range(per_side * per_side))
    tifffile.imwrite(path, tiles, shape=(side, side), dtype=np.uint16, tile=(tile, tile), compression="zlib")
    with tifffile.TiffFile(path) as tf:
        assert tf.pages.first.is_tiled and tf.pages.first.compression == 8  # zlib (deflate)
    assert path.stat().st_size < 2 * MB
    assert side * side * imaging.peak_bytes_per_pixel("I;16") > limits.MAX_DECODED_BYTES
    result, mb = peak_above_baseline(
        "from aquaflow.data import imaging",
        f"result = imaging.decode(open({str(path)!r}, 'rb').read(), max_pixels=10**9).image.shape",
    )
    print(f"tiled 16-bit TIFF {side}x{side} ({path.stat().st_size} bytes): refused, peak +{mb:.1f} MB")
    assert result.startswith("Rejected: too_large") and f"budget {limits.MAX_DECODED_BYTES}" in result
    assert mb < 20

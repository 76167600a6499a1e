"""Resource limits on untrusted inputs, in one place: what one image, scan, mask or archive may cost.

Each limit was sized against a measured peak (tests/unit/test_limits.py states the bound it keeps:
peak RSS at most 300 MB above the process's baseline on the proof-of-concept files of each guard).
The values below are the defaults; a use case changes them with its `limits` section (keys in
CONFIG_KEYS), which the step scripts of the rules that read its data pass to `configure`. The
guards read the module's values when they run, so a configured job uses the use case's limits.
"""

from __future__ import annotations

import sys
from typing import Any

MiB = 1 << 20
GiB = 1 << 30

# --- images (aquaflow.data.imaging) ---------------------------------------------------------------
# Largest file `read_bytes` reads into memory (collages, camera frames and crops are far smaller;
# whole ZooScan scans are read strip by strip by aquaflow.preprocess.scan, not through here).
MAX_FILE_BYTES = 1 * GiB
# Budget for decoding one image: the decoder's own buffer plus our conversion to 8-bit RGB,
# estimated from the header (width x height x the measured peak bytes per pixel of its mode,
# aquaflow.data.imaging.peak_bytes_per_pixel) before a pixel is decoded. 1 GiB admits a 178 Mpx
# 8-bit grey image, a 153 Mpx RGB one or a 107 Mpx 16-bit one.
MAX_DECODED_BYTES = 1 * GiB
# letterbox pads to a square before resizing (as every model of this project was trained) while
# that square fits in this many bytes; a larger image is resized first, then padded, so a 1-pixel
# high strip never costs side x side x 3 bytes.
LETTERBOX_CANVAS_BYTES = 64 * MiB
# center_crop (Ultralytics classification) scales the shorter side to the model size first: an
# image whose scaled copy would exceed this is rejected as `extreme_aspect` rather than allocated.
CENTER_CROP_BYTES = 64 * MiB

# --- ZooScan scans (aquaflow.preprocess.scan) -----------------------------------------------------
# A scan that cannot be read strip by strip (a single-strip compressed or tiled TIFF, a PNG/JPEG)
# is decoded whole only up to this size; a 2400 dpi 16-bit scan (356 Mpx) needs 712 MB.
MAX_WHOLE_SCAN_BYTES = 1 * GiB

# --- COCO masks (aquaflow.tasks.detect.formats) ---------------------------------------------------
# An RLE mask is decoded at its image's size, which must match the RLE's own size and stay under
# this many pixels (Pillow's default decompression-bomb limit x 2).
MAX_MASK_PIXELS = 178_956_970

# --- archives (aquaflow.data.fetch) ----------------------------------------------------------------
MAX_UNPACKED_BYTES = 200 * GiB  # total size of the members, read from the archive's index
MAX_UNPACK_RATIO = 200  # unpacked / archive bytes (image datasets: 1-20; zip bombs: 1000+)
MAX_ARCHIVE_ENTRIES = 2_000_000  # members of one archive

# --- the use case's `limits` section: config key -> (module constant, bytes per unit) -------------
CONFIG_KEYS: dict[str, tuple[str, int]] = {
    "max_file_mb": ("MAX_FILE_BYTES", MiB),
    "max_decoded_mb": ("MAX_DECODED_BYTES", MiB),
    "max_whole_scan_mb": ("MAX_WHOLE_SCAN_BYTES", MiB),
    "extreme_aspect_mb": ("CENTER_CROP_BYTES", MiB),
    "max_unpacked_gb": ("MAX_UNPACKED_BYTES", GiB),
    "max_unpack_ratio": ("MAX_UNPACK_RATIO", 1),
    "max_archive_entries": ("MAX_ARCHIVE_ENTRIES", 1),
}
ARCHIVE_KEYS = ("max_unpacked_gb", "max_unpack_ratio", "max_archive_entries")  # read by fetch only
IMAGE_KEYS = tuple(k for k in CONFIG_KEYS if k not in ARCHIVE_KEYS)  # by the rules that read images
_DEFAULTS = {name: globals()[name] for name, _ in CONFIG_KEYS.values()}


def defaults() -> dict[str, int]:
    """The `limits` section at the defaults above (what the config schema fills in)."""
    return {key: _DEFAULTS[name] // unit for key, (name, unit) in CONFIG_KEYS.items()}


def configure(section: dict[str, Any] | None) -> None:
    """Set this process's limits from a use case's `limits` section (None or {}: the defaults);
    keys left out keep their default."""
    module = sys.modules[__name__]
    section = section or {}
    unknown = set(section) - set(CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown limits key(s) {sorted(unknown)}; allowed: {', '.join(CONFIG_KEYS)}")
    for key, (name, unit) in CONFIG_KEYS.items():
        value = section.get(key)
        setattr(module, name, _DEFAULTS[name] if value is None else int(value * unit))

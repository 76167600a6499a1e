"""Resource limits on untrusted inputs, in one place: what one image, scan, mask or archive may cost.

Each limit was sized against a measured peak (tests/unit/test_limits.py states the bound it keeps:
peak RSS at most 300 MB above the process's baseline on the proof-of-concept files of each guard).
None of them is a config key: a site that needs more changes the constant here.
"""

from __future__ import annotations

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

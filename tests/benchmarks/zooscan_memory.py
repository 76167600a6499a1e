"""Peak memory of ZooScan preprocessing on a large synthetic scan (default 200 megapixels).

Writes a synthetic scan + one blank (uncompressed 8-bit TIFF) into a temporary folder, then runs
background subtraction + segmentation + vignette cutting strip by strip in a child process and
prints `name: value` lines: scan size, objects found vs truth, wall time and the child's peak
resident memory (VmHWM of the child's own address space; ru_maxrss would also count the parent's
memory inherited before exec). With `--separate` every vignette is also scored and, scored
multiple, cut (aquaflow.preprocess.separate, per vignette as the `separate` step does); a full-size
2400 dpi scan is `--height 24000 --width 15000`. Not a pytest test (minutes, ~400 MB of disk); run
it by hand:

    .venv/bin/python tests/benchmarks/zooscan_memory.py [--megapixels 200] [--strip-rows 1024] [--separate]
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from aquaflow.synthetic import zooscan as zs  # noqa: E402

CHILD = """
import sys, time, json
sys.path.insert(0, {scripts!r})
from aquaflow.preprocess import scan, segment, separate
def status(key):
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith(key)][0]
base = status("VmRSS:")
n = [0, 0, 0]
sp = separate.SeparateParams()
def keep(row, vignette, mask):
    n[0] += 1
    if {separate!r} and separate.multiple_score(row["object_solidity"], sp) >= sp.threshold:
        cut = separate.separate(vignette, mask, (row["bbox_x0"] - 8, row["bbox_y0"] - 8), {px}, sp, 8)
        n[1] += 1
        n[2] += len(cut.parts)
params = segment.SegmentParams(pixel_size_um={px}, threshold={thr!r}, min_area_um2={min_area})
t0 = time.perf_counter()
res = scan.process_scan({scan_path!r}, [{blank_path!r}], params, strip_rows={strip}, max_object_px=400,
                        on_object=keep, preview_side=1024)
hwm = status("VmHWM:")
print(json.dumps({{"objects": len(res.objects), "vignettes": n[0], "seconds": time.perf_counter() - t0,
                  "truncated": res.truncated, "threshold": res.threshold, "hwm_kb": hwm, "base_kb": base,
                  "separated": n[1], "parts": n[2]}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=200)
    ap.add_argument("--strip-rows", type=int, default=1024)
    ap.add_argument("--threshold", default="otsu")
    ap.add_argument("--density", type=float, default=10.0, help="blobs per megapixel")
    ap.add_argument("--height", type=int, default=0, help="scan rows (with --width: instead of --megapixels)")
    ap.add_argument("--width", type=int, default=0)
    ap.add_argument("--separate", action="store_true", help="also score and cut every vignette")
    args = ap.parse_args()
    side = int(math.sqrt(args.megapixels * 1e6))
    height, width = (args.height, args.width) if args.height and args.width else (side, side)
    n_blobs = int(args.density * height * width / 1e6)
    thr = args.threshold if args.threshold == "otsu" else int(args.threshold)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scene, orgs, blobs = zs.make_scene(
            height, width, n_single=n_blobs * 3 // 4, n_pairs=n_blobs // 4, seed=1
        )
        files = zs.write_scan(tmp, "big", scene, orgs, blobs, n_blanks=1)
        gen_s = time.perf_counter() - t0
        code = CHILD.format(
            scripts=str(REPO / "scripts"),
            px=zs.PIXEL_SIZE_UM,
            thr=thr,
            min_area=200 * zs.PIXEL_SIZE_UM**2,
            scan_path=str(files["scan"]),
            blank_path=str(files["blank1"]),
            strip=args.strip_rows,
            separate=args.separate,
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"processing failed:\n{proc.stderr}")
        import json

        out = json.loads(proc.stdout.strip().splitlines()[-1])
        peak_kb = out["hwm_kb"]
        scan_mb = files["scan"].stat().st_size / 1e6
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"scan_pixels: {width}x{height} ({width * height / 1e6:.1f} MP, uint8, {scan_mb:.0f} MB on disk)")
    print(f"strip_rows: {args.strip_rows}")
    print(f"generate_seconds: {gen_s:.1f}")
    print(f"truth_blobs: {len(blobs)}")
    print(f"objects_found: {out['objects']}")
    print(f"vignettes: {out['vignettes']}")
    if args.separate:
        print(f"separated: {out['separated']} vignettes into {out['parts']} parts")
    print(f"truncated: {out['truncated']}")
    print(f"threshold: {out['threshold']}")
    print(f"process_seconds: {out['seconds']:.1f}")
    print(f"rss_after_imports_mb: {out['base_kb'] / 1024:.0f}")
    print(f"peak_rss_mb: {peak_kb / 1024:.0f}")
    print(f"peak_rss_per_scan_size: {peak_kb / 1024 / scan_mb:.2f}")


if __name__ == "__main__":
    main()

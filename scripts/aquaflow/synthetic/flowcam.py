"""A synthetic FlowCam run folder: collage TIFFs, a format-017 .lst file and a CSV export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LST_FIELDS = [
    ("id", "int32"),
    ("area_abd", "double"),
    ("diameter_esd", "double"),
    ("timestamp", "string"),
    ("collage_file", "string"),
    ("image_x", "int32"),
    ("image_y", "int32"),
    ("image_w", "int32"),
    ("image_h", "int32"),
    ("src_x", "int32"),
    ("src_y", "int32"),
]


def write_run(
    folder: str | Path, n_particles: int = 12, per_collage: int = 5, seed: int = 0, csv: bool = False
) -> list[dict]:
    """Write collages + list file; return one truth record per particle (box, pixels, metadata)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth: list[dict] = []
    collage_w, collage_h = 400, 120
    for c in range(0, n_particles, per_collage):
        collage = np.full((collage_h, collage_w, 3), 255, np.uint8)
        name = f"run_{c // per_collage + 1:06d}.tif"
        x = 2
        for i in range(c, min(c + per_collage, n_particles)):
            w, h = int(rng.integers(20, 60)), int(rng.integers(20, 100))
            crop = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
            collage[2 : 2 + h, x : x + w] = crop
            truth.append(
                {
                    "particle_id": i + 1,
                    "collage": name,
                    "x": x,
                    "y": 2,
                    "w": w,
                    "h": h,
                    "pixels": crop,
                    "area_abd": round(float(w * h * 0.8), 3),
                    "diameter_esd": round(float(np.sqrt(w * h)), 3),
                    "timestamp": f"2024-05-08 20:50:{i:02d}",
                }
            )
            x += w + 3
        Image.fromarray(collage).save(folder / name, compression="tiff_lzw")
    if csv:
        rows = [
            "Particle ID,Area (ABD),Diameter (ESD),Timestamp,Image File,Image X,Image Y,"
            "Image Width,Image Height"
        ]
        rows += [
            f"{t['particle_id']},{t['area_abd']},{t['diameter_esd']},{t['timestamp']},"
            f"{t['collage']},{t['x']},{t['y']},{t['w']},{t['h']}"
            for t in truth
        ]
        (folder / "run.csv").write_text("\n".join(rows) + "\n")
    else:
        lines = ["017", f"num-fields|{len(LST_FIELDS)}"] + [f"{n}|{t}" for n, t in LST_FIELDS]
        for t in truth:
            vals = [
                t["particle_id"],
                t["area_abd"],
                t["diameter_esd"],
                t["timestamp"],
                t["collage"],
                t["x"],
                t["y"],
                t["w"],
                t["h"],
                t["x"] * 3,
                t["y"] * 3,
            ]
            lines.append("|".join(str(v) for v in vals))
        (folder / "run.lst").write_text("\n".join(lines) + "\n")
    return truth


def perturbed_copies(
    src: str | Path, out: str | Path, n: int, seed: int = 0, quality: int = 92
) -> list[Path]:
    """n JPEGs made from the real crops under `src`: random flips, 90° turns, brightness and
    noise, re-encoded; keeps the class sub-folder. Cheap stand-ins for a year of FlowCam crops."""
    src, out = Path(src), Path(out)
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no images under {src}")
    rng = np.random.default_rng(seed)
    originals = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    written = []
    for i in range(n):
        k = int(rng.integers(len(files)))
        img = originals[k]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.rot90(img, int(rng.integers(4)))
        gain = rng.uniform(0.9, 1.1)
        noisy = img.astype(np.float32) * gain + rng.normal(0, 2.0, img.shape)
        img = np.clip(noisy, 0, 255).astype(np.uint8)
        target = out / files[k].parent.name / f"{i:07d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img)).save(target, quality=quality)
        written.append(target)
    return written

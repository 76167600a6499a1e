"""Synthetic ZooScan scans with ground truth: a scan, its blank(s), and what lies on the scan.

What makes it realistic enough to test background removal and segmentation:
- uneven illumination (radial fall-off, a gradient and a slow ripple) shared by scan and blanks;
- dust specks and scratches at the same places in the scan and every blank (they sit on the glass);
- independent sensor noise in every image (averaging blanks helps);
- organism-like shapes (an elliptic body, a head, an optional tail) of known pixel area, darker
  than the background (transmittance 0.25-0.6), with slightly soft edges;
- touching groups (two, or with `n_triples` three, organisms overlapping by `overlap_px` pixels or
  more), the "multiple" objects; each organism's own mask is known (`Organism.mask`, `instances`).
The scene is a list of primitives rendered strip by strip, so a 200-megapixel scan is written with
bounded memory (`write_scan`), while `render` gives whole arrays for small scans.

Ground truth (CSV): organisms (one row per organism: scan, organism, blob, x, y, area_px) and
blobs (one row per expected segmented object: n_organisms, label single/multiple, area_px, bbox);
with `write_scan(instances=True)` also instances (one row per organism: its bbox, area, ESD in px
and the shape parameters that redraw its mask: `organisms_of(table)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile

PIXEL_SIZE_UM = 10.58  # ZooScan at 2400 dpi


@dataclass
class Organism:
    cx: float
    cy: float
    a: float  # body semi-major axis, px
    b: float  # body semi-minor axis, px
    angle: float  # degrees
    head: float  # head radius, px
    tail: bool
    t: float  # transmittance inside (0 = black)
    blob: int = -1

    def extent(self) -> float:
        return self.a + 2 * self.head + 4

    def mask(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """This organism's own (hard-edged) mask on the scan window box = (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = box
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        self.draw(m, x0, y0, 1)
        return m.astype(bool)

    def draw(self, canvas: np.ndarray, ox: float, oy: float, value: float | None = None) -> None:
        """Draw (filled) into `canvas` whose pixel (0, 0) is scan pixel (ox, oy)."""
        v = self.t if value is None else value
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        cx, cy = self.cx - ox, self.cy - oy
        cv2.ellipse(canvas, (round(cx), round(cy)), (round(self.a), round(self.b)), self.angle, 0, 360, v, -1)
        hx, hy = cx + c * self.a * 0.95, cy + s * self.a * 0.95
        cv2.circle(canvas, (round(hx), round(hy)), round(self.head), v, -1)
        if self.tail:
            tx, ty = cx - c * self.a * 1.3, cy - s * self.a * 1.3
            px, py = -s * self.b * 0.5, c * self.b * 0.5
            bx, by = cx - c * self.a * 0.8, cy - s * self.a * 0.8
            pts = np.array([[tx, ty], [bx + px, by + py], [bx - px, by - py]])
            cv2.fillConvexPoly(canvas, np.round(pts).astype(np.int32), v)


@dataclass
class Scene:
    height: int
    width: int
    dtype: str = "uint8"
    seed: int = 0
    organisms: list[Organism] = field(default_factory=list)
    dust: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x, y, r, t
    scratches: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))  # x0, y0, x1, y1, w, t
    level: float = 0.86  # background brightness at the centre, fraction of white
    noise: float = 1.5  # sensor noise sigma in 8-bit grey levels

    @property
    def white(self) -> int:
        return int(np.iinfo(np.dtype(self.dtype)).max)

    def illumination(self, y0: int, y1: int) -> np.ndarray:
        yy, xx = np.mgrid[y0:y1, 0 : self.width].astype(np.float32)
        ny, nx = (yy / self.height - 0.5) * 2, (xx / self.width - 0.5) * 2
        light = 1.0 - 0.12 * (nx**2 + ny**2) / 2 + 0.04 * nx + 0.015 * np.sin(3.0 * ny + 1.0)
        return (self.level * self.white) * light

    def transmittance(self, y0: int, y1: int, organisms: bool) -> tuple[np.ndarray, np.ndarray]:
        """(dust x organisms transmittance, organism mask) of rows y0..y1, soft edges."""
        g = 3
        t = np.ones((y1 - y0 + 2 * g, self.width), np.float32)
        oy = y0 - g
        for x, y, r, tr in self.dust:
            if y0 - r - g <= y < y1 + r + g:
                cv2.circle(t, (round(x), round(y - oy)), max(1, round(r)), float(tr), -1)
        for x0, sy0, x1, sy1, w, tr in self.scratches:
            if min(sy0, sy1) - g <= y1 and max(sy0, sy1) + g >= y0:
                cv2.line(t, (round(x0), round(sy0 - oy)), (round(x1), round(sy1 - oy)), float(tr), int(w))
        m = np.zeros(t.shape, np.uint8)
        if organisms:
            o = np.ones(t.shape, np.float32)
            for org in self.organisms:
                e = org.extent()
                if org.cy + e >= oy and org.cy - e < y1 + g:
                    org.draw(o, 0, oy)
                    org.draw(m, 0, oy, 1)
            t *= o
        t = cv2.GaussianBlur(t, (5, 5), 0.7)
        return t[g:-g], m[g:-g].astype(bool)

    def rows(self, y0: int, y1: int, organisms: bool, noise_seed: int) -> np.ndarray:
        t, _ = self.transmittance(y0, y1, organisms)
        img = self.illumination(y0, y1) * t
        rng = np.random.default_rng([self.seed, noise_seed, y0])
        img += rng.normal(0.0, self.noise * self.white / 255.0, img.shape).astype(np.float32)
        return np.clip(np.rint(img), 0, self.white).astype(self.dtype)

    def truth_mask(self, y0: int = 0, y1: int | None = None) -> np.ndarray:
        return self.transmittance(y0, self.height if y1 is None else y1, True)[1]


def _area(orgs: list[Organism]) -> tuple[int, tuple[int, int, int, int]]:
    """Pixel area and bbox (x0, y0, x1, y1) of the union of organisms."""
    e = max(o.extent() for o in orgs)
    x0 = math.floor(min(o.cx for o in orgs) - e)
    y0 = math.floor(min(o.cy for o in orgs) - e)
    x1 = math.ceil(max(o.cx for o in orgs) + e)
    y1 = math.ceil(max(o.cy for o in orgs) + e)
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for o in orgs:
        o.draw(m, x0, y0, 1)
    ys, xs = np.nonzero(m)
    return int(m.sum()), (
        x0 + int(xs.min()),
        y0 + int(ys.min()),
        x0 + int(xs.max()) + 1,
        y0 + int(ys.max()) + 1,
    )


def _organism(rng: np.random.Generator, cx: float, cy: float, size_px: float) -> Organism:
    a = size_px / 2
    return Organism(
        cx=cx,
        cy=cy,
        a=a,
        b=a * rng.uniform(0.3, 0.6),
        angle=float(rng.uniform(0, 180)),
        head=a * rng.uniform(0.3, 0.45),
        tail=bool(rng.random() < 0.5),
        t=float(rng.uniform(0.25, 0.6)),
    )


def _touching(rng: np.random.Generator, group: list[Organism], size: float, overlap_px: float) -> Organism:
    """A new organism brought towards the group's first one until it overlaps the group by
    `overlap_px` pixels (from a random direction)."""
    cx, cy = group[0].cx, group[0].cy
    o2 = _organism(rng, cx, cy, size)
    direction = rng.uniform(0, 2 * math.pi)
    dist = max(o.a for o in group) * (1 if len(group) == 1 else 2) + o2.a
    alone = _area(group)[0]
    while dist > 0:
        o2.cx, o2.cy = cx + dist * math.cos(direction), cy + dist * math.sin(direction)
        both, _ = _area([*group, o2])
        if alone + _area([o2])[0] - both >= overlap_px:
            break
        dist -= 1.0
    return o2


def make_scene(
    height: int,
    width: int,
    n_single: int,
    n_pairs: int,
    seed: int = 0,
    dtype: str = "uint8",
    size_px: tuple[float, float] = (30, 90),
    dust_per_mp: float = 150,
    scratches_per_mp: float = 3,
    n_triples: int = 0,
    overlap_px: float = 6,
) -> tuple[Scene, pd.DataFrame, pd.DataFrame]:
    """A scene with singles, touching pairs and (`n_triples`) touching triples, the organisms of a
    group overlapping by at least `overlap_px` pixels; returns (scene, organisms table, blobs table).
    The defaults draw the same scene as before triples and overlap_px existed."""
    rng = np.random.default_rng(seed)
    scene = Scene(height, width, dtype, seed)
    mp = height * width / 1e6
    nd = int(rng.poisson(dust_per_mp * mp))
    scene.dust = np.column_stack(
        [
            rng.uniform(0, width, nd),
            rng.uniform(0, height, nd),
            rng.uniform(1, 3.5, nd),
            rng.uniform(0.4, 0.8, nd),
        ]
    )
    ns = int(rng.poisson(scratches_per_mp * mp)) + 1
    x0, y0 = rng.uniform(0, width, ns), rng.uniform(0, height, ns)
    ln, ang = rng.uniform(100, 800, ns), rng.uniform(0, math.pi, ns)
    scene.scratches = np.column_stack(
        [x0, y0, x0 + ln * np.cos(ang), y0 + ln * np.sin(ang), np.ones(ns), rng.uniform(0.8, 0.92, ns)]
    )
    # placement on a coarse occupancy grid so unrelated blobs never touch
    cell = int(size_px[1] * 2.2)
    gy, gx = height // cell, width // cell
    free = [(r, c) for r in range(gy) for c in range(gx)]
    n_blobs = n_single + n_pairs + n_triples
    if len(free) < n_blobs:
        raise ValueError(f"{height}x{width} holds at most {len(free)} blobs of up to {size_px[1]} px")
    chosen = rng.permutation(len(free))[:n_blobs]
    org_rows, blob_rows = [], []
    for k, idx in enumerate(chosen):
        r, c = free[idx]
        n_orgs = 1 if k < n_single else (2 if k < n_single + n_pairs else 3)
        scale = {1: 1.0, 2: 0.75, 3: 0.6}[n_orgs]  # a group stays inside its grid cell
        s1 = rng.uniform(*size_px) * scale
        cx = c * cell + cell / 2 + rng.uniform(-0.05, 0.05) * cell
        cy = r * cell + cell / 2 + rng.uniform(-0.05, 0.05) * cell
        orgs = [_organism(rng, cx, cy, s1)]
        for _ in range(n_orgs - 1):
            orgs.append(_touching(rng, orgs, rng.uniform(*size_px) * scale, overlap_px))
        area, box = _area(orgs)
        for o in orgs:
            o.blob = k
            scene.organisms.append(o)
            org_rows.append((len(org_rows), k, o.cx, o.cy, _area([o])[0]))
        blob_rows.append(
            (k, len(orgs), "multiple" if n_orgs > 1 else "single", orgs[0].cx, orgs[0].cy, area, *box)
        )
    organisms = pd.DataFrame(org_rows, columns=["organism", "blob", "x", "y", "area_px"])
    blobs = pd.DataFrame(
        blob_rows,
        columns=[
            "blob",
            "n_organisms",
            "label",
            "x",
            "y",
            "area_px",
            "bbox_x0",
            "bbox_y0",
            "bbox_x1",
            "bbox_y1",
        ],
    )
    return scene, organisms, blobs


INSTANCE_SHAPE = ["cx", "cy", "a", "b", "angle", "head", "tail", "t"]


def instances(scene: Scene) -> pd.DataFrame:
    """Truth per organism: organism, blob, bbox (bbox_x1/y1 exclusive), area_px, esd_px and the
    shape parameters that redraw its mask (`organisms_of`)."""
    rows = []
    for k, o in enumerate(scene.organisms):
        area, box = _area([o])
        shape = {f: getattr(o, f) for f in INSTANCE_SHAPE}
        rows.append(
            {
                "organism": k,
                "blob": o.blob,
                "bbox_x0": box[0],
                "bbox_y0": box[1],
                "bbox_x1": box[2],
                "bbox_y1": box[3],
                "area_px": area,
                "esd_px": 2.0 * math.sqrt(area / math.pi),
                **shape,
            }
        )
    return pd.DataFrame(rows)


def organisms_of(table: pd.DataFrame) -> list[Organism]:
    """The organisms of an instances table (to redraw their masks with `Organism.mask`)."""
    return [
        Organism(
            **{f: (bool(r[f]) if f == "tail" else float(r[f])) for f in INSTANCE_SHAPE}, blob=int(r["blob"])
        )
        for r in table.to_dict("records")
    ]


def render(scene: Scene, n_blanks: int = 2) -> tuple[np.ndarray, list[np.ndarray]]:
    """Whole scan and blanks as arrays (small scenes only)."""
    scan = scene.rows(0, scene.height, True, 0)
    blanks = [scene.rows(0, scene.height, False, k + 1) for k in range(n_blanks)]
    return scan, blanks


def _write_strips(path: Path, scene: Scene, organisms: bool, noise_seed: int, strip: int = 1024) -> None:
    mm = tifffile.memmap(path, shape=(scene.height, scene.width), dtype=scene.dtype, photometric="minisblack")
    for y0 in range(0, scene.height, strip):
        y1 = min(scene.height, y0 + strip)
        mm[y0:y1] = scene.rows(y0, y1, organisms, noise_seed)
        mm.flush()
    del mm


def write_scan(
    folder: str | Path,
    name: str,
    scene: Scene,
    organisms: pd.DataFrame,
    blobs: pd.DataFrame,
    n_blanks: int = 2,
    pixel_size_um: float = PIXEL_SIZE_UM,
    with_instances: bool = False,
) -> dict[str, Path]:
    """Write <folder>/scans/<name>.tif, blanks/<name>_blank<k>.tif and truth/<name>_*.csv
    (+ truth/<name>_instances.csv with `with_instances`)."""
    folder = Path(folder)
    for sub in ("scans", "blanks", "truth"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    out = {"scan": folder / "scans" / f"{name}.tif"}
    _write_strips(out["scan"], scene, True, 0)
    for k in range(n_blanks):
        out[f"blank{k + 1}"] = folder / "blanks" / f"{name}_blank{k + 1}.tif"
        _write_strips(out[f"blank{k + 1}"], scene, False, k + 1)
    mm2 = (pixel_size_um / 1000.0) ** 2
    org = organisms.assign(scan=name, area_mm2=organisms["area_px"] * mm2)
    blb = blobs.assign(scan=name, area_mm2=blobs["area_px"] * mm2)
    out["organisms"] = folder / "truth" / f"{name}_organisms.csv"
    out["blobs"] = folder / "truth" / f"{name}_blobs.csv"
    org.to_csv(out["organisms"], index=False)
    blb.to_csv(out["blobs"], index=False)
    if with_instances:
        out["instances"] = folder / "truth" / f"{name}_instances.csv"
        instances(scene).assign(scan=name).to_csv(out["instances"], index=False)
    return out


def write_dataset(
    folder: str | Path,
    n_scans: int = 2,
    height: int = 1400,
    width: int = 2000,
    n_single: int = 30,
    n_pairs: int = 12,
    seed: int = 0,
    dtype: str = "uint8",
    n_blanks: int = 2,
    n_triples: int = 0,
    overlap_px: float = 6,
    with_instances: bool = False,
) -> pd.DataFrame:
    """Several scans (each with its blanks and truth); returns all blobs with their scan name."""
    frames = []
    for k in range(n_scans):
        scene, orgs, blobs = make_scene(
            height,
            width,
            n_single,
            n_pairs,
            seed=seed + k,
            dtype=dtype,
            n_triples=n_triples,
            overlap_px=overlap_px,
        )
        name = f"scan{k + 1:02d}"
        write_scan(folder, name, scene, orgs, blobs, n_blanks, with_instances=with_instances)
        frames.append(blobs.assign(scan=name))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    """python -m aquaflow.synthetic.zooscan OUT [--scans N] [--height H] [--width W] [--seed S]"""
    import argparse

    ap = argparse.ArgumentParser(description="Write synthetic ZooScan scans, blanks and truth.")
    ap.add_argument("out")
    ap.add_argument("--scans", type=int, default=3)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--width", type=int, default=3200)
    ap.add_argument("--singles", type=int, default=80)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--triples", type=int, default=0)
    ap.add_argument("--overlap-px", type=float, default=6)
    ap.add_argument("--instances", action="store_true", help="also write truth/<scan>_instances.csv")
    a = ap.parse_args(argv)
    blobs = write_dataset(
        a.out,
        a.scans,
        a.height,
        a.width,
        a.singles,
        a.pairs,
        a.seed,
        n_triples=a.triples,
        overlap_px=a.overlap_px,
        with_instances=a.instances,
    )
    print(f"{a.out}: {a.scans} scans, {len(blobs)} objects ({(blobs['label'] == 'multiple').sum()} multiple)")


if __name__ == "__main__":
    main()

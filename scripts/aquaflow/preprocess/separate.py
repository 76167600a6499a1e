"""ZooScan "multiple" vignettes: a score (one object or several?) and a classical separator.

Works on one vignette at a time (the object's own mask on its padded vignette), so memory depends
on the largest object, never on the scan.

- `multiple_score`: the default geometric score, from the object's solidity (area / convex hull
  area): touching organisms leave deep concavities at their contact, so the solidity drops. The
  score is a logistic of the solidity, 0.5 at `solidity_midpoint`; on the synthetic scans singles
  have a solidity of 0.90-0.97 and touching groups 0.63-0.86 (tests/benchmarks/zooscan_multiples.py).
- `split`: distance transform + marker-controlled watershed (scikit-image). Markers are the
  regional maxima of the smoothed distance transform that stand at least `h_px` above their
  surroundings; the resulting regions are merged back while the contact between two of them is
  not a neck (contact length >= `neck_ratio` x the smaller one's equivalent spherical diameter),
  and regions under `min_part_px` join their neighbour. With the geometric score, the defaults
  recover 92 % of the organisms of generated scans with touching pairs and triples (64 % without
  separation) at a precision of 0.97 (tests/benchmarks/zooscan_multiples.py).
- `split_from_instances`: the same cut from instance masks a model predicted (distance transform +
  watershed seeded by the instances, regions the model missed added back), the form a model-based
  separator (e.g. Mask2Former) plugs into; no model ships here yet.
- `separation_lines`: the binary line image ZooProcess re-imports (1 on the cut, 0 elsewhere):
  the pixels of each region that touch (8-neighbourhood) a region of lower label, so the parts
  are apart in 8-connectivity once the lines are removed from the mask.
- `separate`: all of it for one vignette: lines, and each part as its own vignette with its own
  EcoTaxa features (the segment module's `features`, scan coordinates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import morphology, segmentation

from aquaflow.preprocess import segment as seg
from aquaflow.preprocess.background import white_of


@dataclass(frozen=True)
class SeparateParams:
    """Separation settings (config `preprocess.separate`)."""

    threshold: float = 0.5  # multiple score at or above which a vignette is separated
    solidity_midpoint: float = 0.88  # solidity whose geometric score is 0.5
    solidity_width: float = 0.02  # how fast the score moves from 0 to 1 around the midpoint
    h_px: float = 0.5  # height (px of distance) a distance maximum needs to seed a part
    smooth_px: float = 1.0  # Gaussian sigma applied to the distance transform
    neck_ratio: float = 0.8  # contact / smaller part's ESD at or above which two parts merge
    min_part_px: int = 30  # parts smaller than this join a neighbour


def params_of(cfg: dict, pixel_size_um: float) -> SeparateParams:
    """SeparateParams from the config section `preprocess.separate` (areas in µm²)."""
    same = {
        k: cfg[k]
        for k in ("threshold", "solidity_midpoint", "solidity_width", "h_px", "smooth_px", "neck_ratio")
    }
    return SeparateParams(**same, min_part_px=max(1, math.ceil(cfg["min_part_um2"] / pixel_size_um**2)))


def multiple_score(solidity: float, params: SeparateParams) -> float:
    """Geometric multiple score in [0, 1] from the object's solidity (see the module docstring)."""
    z = (params.solidity_midpoint - float(solidity)) / params.solidity_width
    return float(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))))


def _contacts(labels: np.ndarray) -> dict[tuple[int, int], int]:
    """Contact length (pixel pairs, 4-neighbourhood) between every two touching labelled regions."""
    out: dict[tuple[int, int], int] = {}
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        hit = (a != b) & (a > 0) & (b > 0)
        if not hit.any():
            continue
        lo, hi = np.minimum(a[hit], b[hit]), np.maximum(a[hit], b[hit])
        pairs, counts = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True)
        for (i, j), n in zip(pairs.tolist(), counts.tolist(), strict=True):
            out[(i, j)] = out.get((i, j), 0) + n
    return out


def _merge_step(labels: np.ndarray, params: SeparateParams) -> bool:
    """Merge the one pair of regions that most needs it (a small part, or the widest contact
    relative to the necks' criterion); False when nothing is left to merge."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) < 2:
        return False
    counts = np.bincount(labels.ravel())
    area = {i: int(counts[i]) for i in ids.tolist()}
    contacts = _contacts(labels)
    if not contacts:
        return False
    best, score = None, 0.0
    for (i, j), n in contacts.items():
        small = min(area[i], area[j]) < params.min_part_px
        ratio = n / (2.0 * math.sqrt(min(area[i], area[j]) / math.pi))  # contact / smaller ESD
        s = math.inf if small else ratio
        if (small or ratio >= params.neck_ratio) and s > score:
            best, score = (i, j), s
    if best is None:
        return False
    labels[labels == best[1]] = best[0]
    return True


def split(mask: np.ndarray, params: SeparateParams) -> np.ndarray:
    """Label image of the parts of one object's mask (0 outside it); labels 1..n, n = 1 when the
    object is not cut."""
    mask = mask.astype(bool)
    dist = ndimage.distance_transform_edt(mask)
    smooth = ndimage.gaussian_filter(dist, params.smooth_px) if params.smooth_px else dist
    markers, _ = ndimage.label(morphology.h_maxima(smooth, params.h_px) & mask)
    labels = segmentation.watershed(-smooth, markers, mask=mask)
    while _merge_step(labels, params):
        pass
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.int32)


def _largest(m: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a mask (empty stays empty)."""
    lab, n = ndimage.label(m, np.ones((3, 3)))
    if n <= 1:
        return m
    return lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))


def split_from_instances(mask: np.ndarray, instances: list[np.ndarray], min_part_px: int) -> np.ndarray:
    """Parts of one object's mask from instance masks a model predicted on its vignette (the
    model-based Multiple Separator's second half): each instance (its largest connected piece in the
    object, if at least `min_part_px` pixels) seeds a
    watershed on the distance transform of the object mask, so overlaps and the pixels no instance
    covers go to the nearest instance; regions of the object no seed reaches (a part the model
    missed) of at least `min_part_px` pixels are added back as parts of their own."""
    mask = mask.astype(bool)
    markers = np.zeros(mask.shape, np.int32)
    for inst in sorted(instances, key=lambda m: -int(m.sum())):
        seed = _largest(inst.astype(bool) & mask & (markers == 0))  # one connected seed each
        if seed.sum() >= min_part_px:  # smaller instances are not parts
            markers[seed] = markers.max() + 1
    # what no instance covers, slivers along the instances' edges opened away: missed parts
    missed, n = ndimage.label(ndimage.binary_opening(mask & (markers == 0), iterations=2), np.ones((3, 3)))
    sizes = np.bincount(missed.ravel(), minlength=n + 1)
    for k in range(1, n + 1):
        if sizes[k] >= min_part_px:
            markers[missed == k] = markers.max() + 1
    if not markers.any():
        return mask.astype(np.int32)
    labels = segmentation.watershed(-ndimage.distance_transform_edt(mask), markers, mask=mask)
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.int32)


def separation_lines(labels: np.ndarray) -> np.ndarray:
    """The cut as a binary image: pixels of a region that touch (8-neighbourhood) a lower label."""
    padded = np.pad(labels, 1)
    line = np.zeros(labels.shape, bool)
    h, w = labels.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            line |= (nb > 0) & (nb < labels)
    return line


@dataclass
class Separation:
    lines: np.ndarray  # bool, the vignette's grid: 1 on the cut
    parts: pd.DataFrame  # one row per part: segment.FEATURES + PIXEL_COLUMNS, scan coordinates
    vignettes: list[np.ndarray]  # each part alone (other parts and the lines white)
    masks: list[np.ndarray]  # each part's own mask on its vignette's grid


def separate(
    vignette: np.ndarray,
    mask: np.ndarray,
    origin: tuple[int, int],
    pixel_size_um: float,
    params: SeparateParams,
    padding: int,
    instances: list[np.ndarray] | None = None,
) -> Separation:
    """Cut one object (its `mask` on its padded `vignette`, whose pixel (0, 0) is scan pixel
    `origin` = (x, y)) into parts; one part (no line) when the watershed finds no neck. With
    `instances` (a model's instance masks on the vignette) the parts come from them instead."""
    if instances is None:
        labels = split(mask, params)
    else:
        labels = split_from_instances(mask, instances, params.min_part_px)
    lines = separation_lines(labels) if labels.max() > 1 else np.zeros(mask.shape, bool)
    kept = np.where(lines, 0, labels)
    ox, oy = origin
    parts = seg.features(kept, vignette, pixel_size_um, offset=(oy, ox))
    white = white_of(vignette.dtype)
    vigs, masks = [], []
    for row in parts.itertuples():
        box = (row.bbox_x0 - ox, row.bbox_y0 - oy, row.bbox_x1 - ox, row.bbox_y1 - oy)
        own = seg.vignette(kept, box, padding, 0) == row.label_id
        vigs.append(
            np.where(
                own | ~seg.vignette(mask, box, padding, 0), seg.vignette(vignette, box, padding, white), white
            )
        )
        masks.append(own)
    return Separation(lines, parts.drop(columns="label_id").reset_index(drop=True), vigs, masks)


def recovered(truth: list[np.ndarray], parts: list[np.ndarray], iou: float = 0.5) -> tuple[int, int]:
    """(truth objects matched by a part with IoU >= iou, parts matching a truth object), masks on
    one common grid: the recall and precision numerators of a separation."""
    if not truth or not parts:
        return 0, 0
    m = np.zeros((len(truth), len(parts)))
    for i, t in enumerate(truth):
        for j, p in enumerate(parts):
            union = np.logical_or(t, p).sum()
            m[i, j] = np.logical_and(t, p).sum() / union if union else 0.0
    hit = m >= iou
    return int(hit.any(1).sum()), int(hit.any(0).sum())


def before_after(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From a preprocess output folder with a `separate` step: objects per image before and after
    separation (index image; columns before, after) and every object's ESD in mm at both stages
    (columns sample, stage, size)."""
    folder = Path(folder)
    table = pd.read_csv(folder / "separation.tsv", sep="\t").set_index("image")
    counts = table.rename(columns={"segmented": "before", "objects": "after"})[["before", "after"]]
    items = pd.read_parquet(folder / "items.parquet")
    if items.empty:
        return counts, pd.DataFrame(columns=["sample", "stage", "size"])
    cut = pd.read_parquet(folder / "separated.parquet")
    cols = ["image", "object_esd"]
    whole = items.loc[items["object_parent_id"] == "", cols]
    before = pd.concat([whole, cut[cols]]) if len(cut) else whole  # the cut objects, as segmented
    sizes = pd.concat([before.assign(stage="before"), items[cols].assign(stage="after")], ignore_index=True)
    return counts, sizes.rename(columns={"image": "sample", "object_esd": "size"})

"""The `preprocess` step of a use case: its ordered list of steps, run on the fetched images.

Items flow through the steps as a table (one row per image, then per object or tile):
- `dedup`      images -> images    near-duplicate frames dropped (rejected, reason near_duplicate)
- `background` images -> images    blank-scan subtraction (+ flat field), or a rolling median over
                                   the image sequence; fused with a following `segment` so big
                                   scans are processed strip by strip and never held whole
- `segment`    images -> objects   vignettes + EcoTaxa features (physical units)
- `separate`   objects -> objects  (right after `segment`, fused with it) each object gets a
                                   multiple score; those scored multiple are cut into parts
                                   (aquaflow.preprocess.separate), which replace them
- `patchify`   images -> tiles     tiles with their coordinates

Every file it reads (the images matching `images`, blank and flat scans, label files) must
resolve under the fetched folder (`aquaflow.data.roots`): an image outside it is rejected as
`outside_root` and never opened, a blank, flat or label file outside it rejects the image that
needs it; the use case's `allow_paths_outside_root: true` turns the check off.

Output folder (`out`): `train/<label>/*.png` (items with a label: what dataset.build_manifest
reads), `unlabelled/*.png`, `items.parquet` (every final item: `path` relative to `out` plus its
metadata; what inference reads as a `manifest` input), `steps.tsv` (one row per step: files in,
files out, seconds), `rejected.parquet`, and two report figures (before/after, examples).
With `separate`: `separation/<object>.png` (the cut of each separated object, a binary line image
on its vignette's grid, as ZooProcess re-imports it), `separated.parquet` (one row per separated
object) and `separation.tsv` (per image: objects before and after separation).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from aquaflow.data import imaging, roots
from aquaflow.io import write_parquet
from aquaflow.preprocess import background as bgmod
from aquaflow.preprocess import dedup as dedupmod
from aquaflow.preprocess import scan as scanmod
from aquaflow.preprocess import segment as seg
from aquaflow.preprocess import separate as sepmod
from aquaflow.preprocess import tiles as tilemod

log = logging.getLogger(__name__)

STEPS = ("dedup", "background", "segment", "separate", "patchify")
# Ledger reasons besides imaging.REASONS and near_duplicate:
BAD_SCAN = "bad_scan"  # the scan reader failed (not a grayscale scan, corrupt TIFF, ...)
MISSING_BLANK = "missing_blank"  # background.blanks is set but matches no file for this image
# separation.tsv: per image, objects segmented, objects cut, parts they gave, objects written
SEPARATION_COLUMNS = ["image", "segmented", "separated", "parts", "objects"]


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", name)


def _glob(root: Path, pattern: str, stem: str = "") -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(root / pattern.replace("{stem}", stem)), recursive=True))


def _image_file(path: Path, root: Path) -> str:
    """An image's name in the ledger and items table: relative to the root (`..` when outside)."""
    return imaging.display_path(Path(os.path.relpath(path, root)).as_posix())


def _read_gray(path: Path) -> np.ndarray:
    r = scanmod.StripReader(path)
    return r.rows(0, r.height)


@dataclass
class _Ctx:
    root: Path
    out: Path
    cfg: dict[str, Any]
    labels: dict[str, Any]
    items: list[dict[str, Any]]
    rejected: list[tuple[str, str, str]]
    examples: list[np.ndarray]
    before_after: np.ndarray | None = None
    final: bool = False  # the running step is the last one: items are written as they come
    separated: list[dict[str, Any]] = field(default_factory=list)  # one row per separated object
    separation: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # per image
    separator: Callable[[np.ndarray], list[np.ndarray]] | None = None  # separate.method: model
    scorer: Callable[[np.ndarray], float] | None = None  # separate.score: model
    inside: roots.Root | None = None  # the root every file read must stay under (None: opted out)

    def glob(self, pattern: str, stem: str = "") -> list[Path]:
        """Files matching `pattern` under the root; one resolving outside it is Rejected(outside_root)."""
        files = _glob(self.root, pattern, stem)
        for f in files if self.inside is not None else ():
            self.inside.check(f)
        return files

    def emit(self, item: dict) -> dict:
        """Pass an item on; from the last step, write its pixels now so memory stays bounded."""
        if not self.final:
            return item
        return self.write(item)

    def write(self, item: dict) -> dict:
        item = dict(item)
        arr = item.pop("_array", None)
        if arr is None:
            arr = imaging.load(item["_file"]).image
        name = f"{_safe(item.get('object_name', item['image']))}.png"
        item["path"] = self.save(arr, name, item.pop("_label", None))
        item.pop("_file", None)
        return item

    def save(self, img: np.ndarray, name: str, label: str | None) -> str:
        rel = Path("train", _safe(label), name) if label else Path("unlabelled", name)
        (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(self.out / rel), img if img.ndim == 2 else img[:, :, ::-1])
        if len(self.examples) < 48:
            self.examples.append(img)
        return str(rel)


def _point_labels(ctx: _Ctx, stem: str, objects: list[tuple[dict, np.ndarray]], pad: int) -> list[str | None]:
    """labels.kind = points: objects whose mask holds 1 point -> `single`, >= 2 -> `multiple`.

    Points are a CSV per image (columns x, y in pixels), e.g. one point per organism; objects
    holding no point stay unlabelled (they are predicted, not trained on).
    """
    spec = ctx.labels
    files = ctx.glob(spec["path"], stem)
    if not files:
        return [None] * len(objects)
    pts = pd.read_csv(files[0])
    counts = np.zeros(len(objects), np.int64)
    x0 = np.array([r["bbox_x0"] for r, _ in objects])
    y0 = np.array([r["bbox_y0"] for r, _ in objects])
    x1 = np.array([r["bbox_x1"] for r, _ in objects])
    y1 = np.array([r["bbox_y1"] for r, _ in objects])
    for px, py in zip(pts["x"].round().astype(int), pts["y"].round().astype(int), strict=True):
        for i in np.nonzero((x0 <= px) & (px < x1) & (y0 <= py) & (py < y1))[0]:
            if objects[i][1][py - y0[i] + pad, px - x0[i] + pad]:  # the object's own mask
                counts[i] += 1
                break
    return [None if n == 0 else (spec["single"] if n == 1 else spec["multiple"]) for n in counts]


def _tile_labels(ctx: _Ctx, stem: str, grid: pd.DataFrame) -> list[str | None]:
    files = ctx.glob(ctx.labels["path"], stem)
    if not files:
        return [None] * len(grid)
    truth = pd.read_csv(files[0]).set_index(["row", "col"])["label"].to_dict()
    return [truth.get((r, c)) for r, c in zip(grid["row"], grid["col"], strict=True)]


def _reject(ctx: _Ctx, item: dict, exc: Exception) -> None:
    """One image that cannot be processed goes to the ledger; the step goes on with the others."""
    if isinstance(exc, imaging.Rejected):
        reason, detail = exc.reason, exc.detail
    elif isinstance(exc, FileNotFoundError) and "blank" in str(exc):
        reason, detail = MISSING_BLANK, str(exc)
    else:
        reason, detail = BAD_SCAN, f"{type(exc).__name__}: {exc}"
    log.warning("%s rejected (%s): %s", item["image_file"], reason, detail)
    ctx.rejected.append((item["image_file"], reason, detail))


def _keep(item: dict) -> dict:
    """The metadata an item passes to what is cut from it (not its file or pixels)."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _step_dedup(ctx: _Ctx, items: list[dict]) -> list[dict]:
    cfg = ctx.cfg["dedup"]
    good: list[dict] = []  # the items that decoded, in order: what `decisions` refer to

    def frames():
        for it in items:
            try:
                img = imaging.load(it["_file"]).image
            except Exception as exc:
                _reject(ctx, it, exc)
                continue
            good.append(it)
            yield img

    decisions = dedupmod.near_duplicates(frames(), cfg["threshold"], cfg["window"], cfg["hash"])
    kept = []
    for it, d in zip(good, decisions, strict=True):
        if d.keep:
            kept.append(it)
        else:
            ctx.rejected.append(
                (it["image"], "near_duplicate", f"{good[d.duplicate_of]['image']} (distance {d.distance})")
            )
    return kept


def _step_background_only(ctx: _Ctx, items: list[dict]) -> list[dict]:
    """Background without a following segment: write corrected images (whole-image in memory)."""
    cfg = ctx.cfg["background"]
    (ctx.out / "corrected").mkdir(parents=True, exist_ok=True)
    out = []
    good: list[dict] = []  # the items that could be read, in order: what `corrected` yields for

    def read(fn):
        for it in items:
            try:
                img = fn(it)
            except Exception as exc:
                _reject(ctx, it, exc)
                continue
            good.append(it)
            yield img

    if cfg["method"] == "rolling_median":
        corrected = bgmod.subtract_rolling(read(lambda it: _read_gray(Path(it["_file"]))), cfg["window"])
    else:
        corrected = read(lambda it: _blank_corrected(ctx, Path(it["_file"]), it["image"]))
    for k, img in enumerate(corrected):
        it = good[k]
        path = ctx.out / "corrected" / f"{_safe(it['image'])}.png"
        cv2.imwrite(str(path), seg.to_uint8(img))
        out.append({**it, "_file": str(path)})
    return out


def _blanks(ctx: _Ctx, stem: str) -> tuple[list[Path], Path | None]:
    cfg = ctx.cfg["background"]
    blanks = ctx.glob(cfg["blanks"], stem) if cfg.get("blanks") else []
    if cfg.get("blanks") and not blanks:
        raise FileNotFoundError(f"no blank scan matches {cfg['blanks']!r} for {stem}")
    flat = ctx.glob(cfg["flat"], stem) if cfg.get("flat") else []
    return blanks, (flat[0] if flat else None)


def _blank_corrected(ctx: _Ctx, path: Path, stem: str) -> np.ndarray:
    blanks, flat = _blanks(ctx, stem)
    scan = _read_gray(path)
    if blanks:
        bg = bgmod.combine_blanks([_read_gray(b) for b in blanks])
    else:  # no blank scan: a white background, so only the flat field (if any) changes the scan
        bg = np.full(scan.shape, bgmod.white_of(scan.dtype), scan.dtype)
    gain = bgmod.flat_gain(_read_gray(flat)) if flat else None
    return bgmod.subtract(scan, bg, ctx.cfg["background"]["method"], gain)


def _object_meta(row: dict, pixel_size_um: float, threshold: int) -> dict:
    """An object's metadata in the items table: its features, pixel box and how it was measured."""
    meta = {key: row[key] for key in seg.FEATURES + seg.PIXEL_COLUMNS}
    meta["process_particle_pixel_size_mm"] = pixel_size_um / 1000.0
    meta["process_particle_threshold"] = threshold
    return meta


def _separated(
    ctx: _Ctx, base: dict, oid: str, row: dict, obj: tuple[np.ndarray, np.ndarray, str | None], threshold: int
) -> list[dict]:
    """Items for one segmented object under the `separate` step: the object itself with its
    multiple score, or (scored multiple and cut in >= 2 parts) its parts with the parent's id. A
    cut object still goes to train/<label>/ (the multiple classifier's training set), its line
    image to separation/, but not to the items."""
    c = ctx.cfg["segment"]
    vig, own, label = obj
    params = sepmod.params_of(ctx.cfg["separate"], c["pixel_size_um"])
    pad = c["padding_px"]
    score = ctx.scorer(vig) if ctx.scorer else sepmod.multiple_score(row["object_solidity"], params)
    whole = {**base, "object_name": oid, "_label": label, "_array": vig, "object_parent_id": ""}
    whole |= _object_meta(row, c["pixel_size_um"], threshold)
    if score < params.threshold:
        return [{**whole, "object_multiple_score": score}]
    instances = ctx.separator(vig) if ctx.separator is not None else None
    origin = (row["bbox_x0"] - pad, row["bbox_y0"] - pad)
    cut = sepmod.separate(vig, own, origin, c["pixel_size_um"], params, pad, instances)
    if len(cut.parts) < 2:
        return [{**whole, "object_multiple_score": score}]
    lines = Path("separation", f"{_safe(oid)}.png")
    (ctx.out / lines).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ctx.out / lines), cut.lines.astype(np.uint8) * 255)
    if label is not None:  # the training set keeps the object as it was segmented
        ctx.save(vig, f"{_safe(oid)}.png", label)
    ctx.separated.append(
        {
            "object_name": oid,
            "image": base["image"],
            "object_multiple_score": score,
            "n_parts": len(cut.parts),
        }
        | {"lines": str(lines), **{k: row[k] for k in seg.FEATURES + seg.PIXEL_COLUMNS}}
    )
    parts = []
    for j, (part, pvig) in enumerate(zip(cut.parts.to_dict("records"), cut.vignettes, strict=True)):
        pscore = ctx.scorer(pvig) if ctx.scorer else sepmod.multiple_score(part["object_solidity"], params)
        meta = _object_meta(part, c["pixel_size_um"], threshold)
        parts.append(
            {**base, "object_name": f"{oid}_{j + 1}", "_label": None, "_array": pvig, "object_parent_id": oid}
            | {**meta, "object_multiple_score": pscore}
        )
    return parts


def _step_segment(ctx: _Ctx, items: list[dict], with_background: bool, separate: bool = False) -> list[dict]:
    c = ctx.cfg["segment"]
    params = seg.SegmentParams(
        pixel_size_um=c["pixel_size_um"],
        threshold=c["threshold"],
        min_area_um2=c["min_area_um2"],
        closing_px=c["closing_px"],
        opening_px=c["opening_px"],
        fill_holes=c["fill_holes"],
        keep_border=c["keep_border"],
    )
    max_px = round(c["max_object_mm"] * 1000 / c["pixel_size_um"])
    out = []
    for it in items:
        stem = it["image"]
        method = ctx.cfg["background"]["method"] if with_background else "difference"
        vigs: list[tuple[dict, np.ndarray]] = []
        masks: list[tuple[dict, np.ndarray]] = []

        def keep(row: dict, vig: np.ndarray, own: np.ndarray, vigs=vigs, masks=masks) -> None:
            vigs.append((row, vig))
            masks.append((row, own))

        try:
            blanks, flat = _blanks(ctx, stem) if with_background else ([], None)
            res = scanmod.process_scan(
                it["_file"],
                blanks,
                params,
                method=method,
                flat_path=flat,
                strip_rows=c["strip_rows"],
                max_object_px=max_px,
                padding=c["padding_px"],
                on_object=keep,
                preview_side=ctx.cfg["preview_side"] if ctx.before_after is None else 0,
            )
        except Exception as exc:  # one bad scan never stops the others
            _reject(ctx, it, exc)
            continue
        if res.previews:
            ctx.before_after = np.hstack(
                [
                    res.previews["scan"],
                    np.full((res.previews["scan"].shape[0], 8), 0, np.uint8),
                    res.previews["subtracted"],
                ]
            )
        labels: list[str | None] = [None] * len(vigs)
        if ctx.labels["kind"] == "points":
            try:
                labels = _point_labels(ctx, stem, masks, c["padding_px"])
            except imaging.Rejected as exc:  # its label file resolves outside the root
                _reject(ctx, it, exc)
                continue
        n_out = len(out)
        for k, ((row, vig), (_, own), label) in enumerate(zip(vigs, masks, labels, strict=True)):
            oid = f"{_safe(stem)}_{k + 1:05d}"
            if separate:
                made = _separated(ctx, _keep(it), oid, row, (vig, own, label), res.threshold)
                out.extend(ctx.emit(x) for x in made)
                continue
            meta = _object_meta(row, c["pixel_size_um"], res.threshold)
            out.append(ctx.emit({**_keep(it), "object_name": oid, "_label": label, "_array": vig, **meta}))
        if separate:
            cut = [r for r in ctx.separated if r["image"] == stem]
            n_parts = sum(r["n_parts"] for r in cut)
            ctx.separation.append((stem, len(vigs), len(cut), n_parts, len(out) - n_out))
        log.info(
            "%s: %d objects (%d at the border, %d truncated)", stem, len(vigs), res.border, res.truncated
        )
    return out


def _step_patchify(ctx: _Ctx, items: list[dict]) -> list[dict]:
    c = ctx.cfg["patchify"]
    out = []
    for it in items:
        img = it.get("_array")
        if img is None:
            try:
                img = imaging.load(it["_file"]).image
            except imaging.Rejected as exc:
                _reject(ctx, it, exc)
                continue
        tiles, grid = tilemod.patchify(img, c["tile"], c["overlap"], c["pad_mode"])
        labels: list[str | None] = [None] * len(grid)
        try:
            labels = _tile_labels(ctx, it["image"], grid) if ctx.labels["kind"] == "tiles" else labels
        except imaging.Rejected as exc:  # its label file resolves outside the root
            _reject(ctx, it, exc)
            continue
        if ctx.before_after is None:
            shown = img.copy()
            for x, y in zip(grid["x"], grid["y"], strict=True):
                cv2.rectangle(
                    shown, (int(x), int(y)), (int(x) + c["tile"] - 1, int(y) + c["tile"] - 1), (255, 0, 0), 1
                )
            ctx.before_after = np.hstack([img, np.zeros((img.shape[0], 8, 3), np.uint8), shown])
        for t, g, label in zip(tiles, grid.to_dict("records"), labels, strict=True):
            out.append(
                ctx.emit(
                    {
                        **_keep(it),
                        "object_name": f"{_safe(it['image'])}_r{g['row']:03d}_c{g['col']:03d}",
                        "_label": label,
                        "_array": t,
                        "tile_row": g["row"],
                        "tile_col": g["col"],
                        "tile_x": g["x"],
                        "tile_y": g["y"],
                        "tile_w": g["w"],
                        "tile_h": g["h"],
                    }
                )
            )
    return out


def _montage(images: list[np.ndarray], side: int = 96, cols: int = 8) -> np.ndarray:
    if not images:
        return np.full((side, side, 3), 255, np.uint8)
    cells = []
    for img in images:
        rgb = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, 2)
        cells.append(imaging.letterbox(np.ascontiguousarray(rgb), side))
    while len(cells) % cols:
        cells.append(np.full((side, side, 3), 255, np.uint8))
    rows = [np.hstack(cells[i : i + cols]) for i in range(0, len(cells), cols)]
    return np.vstack(rows)


def run(
    root: str | Path,
    cfg: dict[str, Any],
    out: str | Path,
    figures: dict[str, str | Path],
    separator: Callable[[np.ndarray], list[np.ndarray]] | None = None,
    scorer: Callable[[np.ndarray], float] | None = None,
) -> pd.DataFrame:
    """Run the configured steps on the images matching cfg['images'] under `root`.

    `separator(vignette) -> instance masks` (separate.method model, e.g.
    aquaflow.backends.mask2former.InstanceSeparator) replaces the classical watershed's markers;
    `scorer(vignette) -> P(multiple)` (separate.score model, aquaflow.backends.scorer.MultipleScorer)
    replaces the geometric multiple score.

    Returns the steps table; writes everything described in the module docstring under `out`
    and the two report figures (`figures['before_after']`, `figures['examples']`).
    """
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = list(cfg["steps"])
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown preprocess step(s) {unknown}; allowed: {', '.join(STEPS)}")
    files = _glob(root, cfg["images"])
    if not files:
        raise FileNotFoundError(f"{root}: no image matches preprocess.images={cfg['images']!r}")
    inside = None if cfg.get(roots.OPT_OUT) else roots.Root(root)
    ctx = _Ctx(root, out, cfg, cfg["labels"], [], [], [], separator=separator, scorer=scorer, inside=inside)
    # names as valid UTF-8 text (Parquet needs it; undecodable bytes become backslash escapes);
    # `_file` keeps the exact path to open
    items: list[dict] = []
    for f in files:
        item = {"image": imaging.display_path(f.stem), "image_file": _image_file(f, root), "_file": str(f)}
        if inside is not None and not inside.contains(f):  # never opened
            _reject(ctx, item, imaging.Rejected(roots.OUTSIDE_ROOT, inside.detail(item["image_file"])))
            continue
        items.append(item)
    stems = pd.Series([it["image"] for it in items])
    if stems.duplicated().any():
        raise ValueError(f"image names must be unique (by stem): {sorted(set(stems[stems.duplicated()]))}")
    rows = []
    i = 0
    while i < len(steps):
        step, t0, n_in = steps[i], time.perf_counter(), len(items)
        fused = step == "background" and i + 1 < len(steps) and steps[i + 1] == "segment"
        j = i + (1 if fused else 0)  # index of the segment step (when it is the running one)
        cut = steps[j] == "segment" and j + 1 < len(steps) and steps[j + 1] == "separate"
        ctx.final = j + (2 if cut else 1) == len(steps)
        if step == "separate":
            raise ValueError("preprocess step `separate` must directly follow `segment`")
        if step == "dedup":
            items = _step_dedup(ctx, items)
        elif fused:
            items = _step_segment(ctx, items, with_background=True, separate=cut)
            rows.append(("background", n_in, n_in, 0.0, "fused with segment (strip by strip)"))
            step = "segment"
            i += 1
        elif step == "background":
            items = _step_background_only(ctx, items)
        elif step == "segment":
            items = _step_segment(ctx, items, with_background=False, separate=cut)
        elif step == "patchify":
            items = _step_patchify(ctx, items)
        if cut:
            n_seg = sum(r[1] for r in ctx.separation)
            rows.append((step, n_in, n_seg, time.perf_counter() - t0, ""))
            step, n_in = "separate", n_seg
            rows.append((step, n_in, len(items), 0.0, "fused with segment (per object)"))
            i += 1
        else:
            rows.append((step, n_in, len(items), time.perf_counter() - t0, ""))
        log.info("step %s: %d -> %d items", step, n_in, len(items))
        i += 1
    # write the final items: labelled ones into train/<label>/, the rest into unlabelled/
    table = []
    for it in items:
        try:
            table.append(it if "path" in it else ctx.write(it))
        except imaging.Rejected as exc:
            _reject(ctx, it, exc)
    items_df = pd.DataFrame(table)
    if not items_df.empty:
        items_df = items_df[["path"] + [c for c in items_df.columns if c != "path"]]
    write_parquet(items_df, out / "items.parquet")
    steps_df = pd.DataFrame(rows, columns=["step", "items_in", "items_out", "seconds", "note"])
    steps_df.to_csv(out / "steps.tsv", sep="\t", index=False)
    write_parquet(pd.DataFrame(ctx.rejected, columns=["path", "reason", "detail"]), out / "rejected.parquet")
    if "separate" in steps:
        write_parquet(pd.DataFrame(ctx.separated), out / "separated.parquet")
        pd.DataFrame(ctx.separation, columns=SEPARATION_COLUMNS).to_csv(
            out / "separation.tsv", sep="\t", index=False
        )
    ba = ctx.before_after if ctx.before_after is not None else _montage([])
    cv2.imwrite(str(figures["before_after"]), ba if ba.ndim == 2 else ba[:, :, ::-1])
    ex = _montage(ctx.examples)
    cv2.imwrite(str(figures["examples"]), ex[:, :, ::-1])
    return steps_df

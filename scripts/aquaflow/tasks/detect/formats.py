"""Labelled detection data: YOLO dataset folders and COCO JSON, validated, converted, materialised.

YOLO (Ultralytics) layout: a dataset YAML (`names`, `train`/`val`/`test` = image folders, lists of
folders or .txt lists of images, relative to `path` or the YAML's folder) and one `.txt` per image
found by replacing the last `/images/` of the image path with `/labels/`. A row is
`class x_center y_center width height` (detect), `class x1 y1 ... xn yn` (segment, n >= 3) or
`class x1 y1 x2 y2 x3 y3 x4 y4` (obb); coordinates normalised to [0, 1]; a missing or empty label
file means "no objects". Every problem raises `LabelError` naming the file and the line.

COCO: an instances JSON (`images`, `annotations`, `categories`); segmentation as polygons or RLE.
Class index i of a YOLO dataset is COCO category id i + 1 in everything this module writes.

Every path the data names (the YAML's `path:`, split folders, list files and their lines, COCO
`file_name`) must resolve, links and `..` followed, under the dataset's root (`read_dataset`), else
`LabelError` with the reason `outside_root`; the use case's `allow_paths_outside_root` opts out.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from aquaflow.data import limits
from aquaflow.data.roots import OUTSIDE_ROOT, Root

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
TOLERANCE = 1e-3  # normalised coordinates may overshoot [0, 1] by this much (rounding); they are clipped


class LabelError(ValueError):
    """A label file, dataset YAML or COCO JSON is invalid; the message names the file (and line)."""


@dataclass
class Label:
    cls: int
    kind: str  # box | polygon | obb
    coords: np.ndarray  # normalised: box (xc, yc, w, h); polygon / obb (n, 2)

    def xyxy(self) -> np.ndarray:
        if self.kind == "box":
            xc, yc, w, h = self.coords
            return np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2])
        return np.concatenate([self.coords.min(0), self.coords.max(0)])


@dataclass
class Split:
    images: list[Path] = field(default_factory=list)
    labels: list[list[Label]] = field(default_factory=list)


@dataclass
class Dataset:
    names: list[str]
    splits: dict[str, Split]
    origin: str


def _parse_row(parts: list[str], task: str, nc: int, where: str) -> Label:
    try:
        cls_f = float(parts[0])
    except ValueError:
        raise LabelError(f"{where}: class id {parts[0]!r} is not a number") from None
    if cls_f != int(cls_f):
        raise LabelError(f"{where}: class id {parts[0]!r} is not an integer")
    cls = int(cls_f)
    if not 0 <= cls < nc:
        raise LabelError(f"{where}: class id {cls} unknown (dataset has {nc} classes: 0..{nc - 1})")
    try:
        vals = np.array([float(v) for v in parts[1:]], dtype=np.float64)
    except ValueError as exc:
        raise LabelError(f"{where}: {exc}") from None
    if not np.isfinite(vals).all():
        raise LabelError(f"{where}: non-finite coordinate")
    if ((vals < -TOLERANCE) | (vals > 1 + TOLERANCE)).any():
        bad = vals[(vals < -TOLERANCE) | (vals > 1 + TOLERANCE)][0]
        raise LabelError(f"{where}: coordinate {bad:g} outside [0, 1] (coordinates are normalised)")
    vals = np.clip(vals, 0.0, 1.0)
    n = vals.size
    if task == "obb":
        if n != 8:
            raise LabelError(f"{where}: obb rows are 'class x1 y1 x2 y2 x3 y3 x4 y4' (8 values), got {n}")
        return Label(cls, "obb", vals.reshape(4, 2))
    if n == 4 and task == "detect":
        if vals[2] <= 0 or vals[3] <= 0:
            raise LabelError(f"{where}: box width and height must be > 0")
        return Label(cls, "box", vals)
    if n >= 6 and n % 2 == 0:  # a polygon (allowed in detect datasets too: its bounding box is used)
        return Label(cls, "polygon", vals.reshape(-1, 2))
    want = "'class xc yc w h' (4 values)" if task == "detect" else "'class x1 y1 ... xn yn' (n >= 3 points)"
    raise LabelError(f"{where}: {task} rows are {want}, got {n} values")


def read_label_file(path: str | Path, task: str, nc: int) -> list[Label]:
    """Rows of one YOLO label file; a missing or empty file is an image without objects."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        out.append(_parse_row(parts, task, nc, f"{path}:{lineno}"))
    return out


def label_path(image: str | Path) -> Path:
    """Ultralytics' rule: the last /images/ of the path becomes /labels/, the suffix .txt."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        head, _, tail = s.rpartition(sa)
        s = head + sb + tail
    return Path(s).with_suffix(".txt")


def _names(data: dict, where: str) -> list[str]:
    names = data.get("names")
    if names is None:
        if "nc" in data:
            return [f"class_{i}" for i in range(int(data["nc"]))]
        raise LabelError(f"{where}: no 'names' (class names) in the dataset YAML")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise LabelError(f"{where}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
        return [str(names[k]) for k in keys]
    return [str(n) for n in names]


def _inside(path: Path, within: Root | None, where: str) -> Path:
    """`path`, or LabelError (reason outside_root) when it resolves outside the dataset's root."""
    if within is not None and not within.contains(path):
        raise LabelError(f"{where}: {OUTSIDE_ROOT}: {within.detail(path)}")
    return path


def _split_images(root: Path, spec: Any, where: str, within: Root | None = None) -> list[Path]:
    entries = spec if isinstance(spec, list) else [spec]
    out: list[Path] = []
    for entry in entries:
        p = _inside(Path(entry) if os.path.isabs(str(entry)) else root / str(entry), within, where)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    out.append(_inside(q if q.is_absolute() else (p.parent / q), within, str(p)))
        else:
            raise LabelError(f"{where}: split folder or list {entry!r} not found (looked for {p})")
    return out


def read_yolo(data_yaml: str | Path, task: str, within: Root | None = None) -> Dataset:
    """A YOLO dataset folder, every label validated (LabelError names the file and line).

    `within`: the dataset's root; its `path:`, split folders, list files and every image they name
    must resolve under it (found by following links in a folder too), else LabelError outside_root."""
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise LabelError(f"{data_yaml}: dataset YAML not found")
    try:
        data = yaml.safe_load(data_yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LabelError(f"{data_yaml}: not valid YAML: {exc}") from None
    names = _names(data, str(data_yaml))
    root = _inside(data_yaml.parent / str(data.get("path", "") or ""), within, f"{data_yaml} ('path')")
    if not root.is_dir():
        raise LabelError(f"{data_yaml}: 'path' {data.get('path')!r} is not a folder")
    splits = {}
    for split in SPLITS:
        if not data.get(split):
            continue
        where = f"{data_yaml} ({split})"
        images = [_inside(im, within, where) for im in _split_images(root, data[split], where, within)]
        labels = [read_label_file(label_path(im), task, len(names)) for im in images]
        splits[split] = Split(images, labels)
    for need in ("train", "val"):
        if need not in splits:
            raise LabelError(f"{data_yaml}: no '{need}' split (Ultralytics needs train and val)")
    return Dataset(names, splits, str(data_yaml))


def _coco_polygon_to_norm(seg: list, w: int, h: int) -> np.ndarray:
    pts = np.asarray(seg, dtype=np.float64).reshape(-1, 2)
    return np.clip(pts / [w, h], 0, 1)


def check_rle_size(seg: dict, h: int, w: int, image: Path) -> None:
    """An RLE mask is decoded at its own `size`: it must be the size of its image entry, which must
    be the image file's own (read from its header) and at most limits.MAX_MASK_PIXELS, so a few
    bytes of JSON cannot ask for a mask of gigabytes."""
    size = seg.get("size")
    if not (isinstance(size, list) and len(size) == 2 and [int(v) for v in size] == [h, w]):
        raise LabelError(f"RLE size {size!r} is not its image's [height, width] [{h}, {w}]")
    if h * w > limits.MAX_MASK_PIXELS:
        raise LabelError(f"RLE mask of {w}x{h} px exceeds {limits.MAX_MASK_PIXELS} px")
    if not image.is_file():
        raise LabelError(f"image {image} of an RLE mask does not exist")
    if image_size(image) != (w, h):
        raise LabelError(f"image {image} is {image_size(image)} px, its entry says {w}x{h}")


def _rle_polygon(seg: dict, h: int, w: int) -> np.ndarray | None:
    import cv2
    from pycocotools import mask as mask_utils

    rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
    m = mask_utils.decode(rle)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    return c / [w, h] if len(c) >= 3 else None


def read_coco(
    annotations: str | Path,
    images_dir: str | Path,
    task: str,
    names: list[str] | None = None,
    within: Root | None = None,
):
    """(images, labels per image, class names) from a COCO instances JSON, validated.

    Categories are ordered by id (or by `names` when given); polygons/RLE become YOLO polygons
    (largest part) for segment, boxes for detect. OBB has no COCO form: use a YOLO dataset.
    """
    path = Path(annotations)
    if task == "obb":
        raise LabelError(f"{path}: oriented boxes have no COCO form; give a YOLO OBB dataset (format: yolo)")
    try:
        coco = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabelError(f"{path}: COCO annotations file not found") from None
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise LabelError(
                f"{path}: no '{key}' list (a COCO instances file has images, annotations, categories)"
            )
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    cat_names = [str(c["name"]) for c in cats]
    order = names or cat_names
    missing = set(cat_names) - set(order)
    if missing:
        raise LabelError(f"{path}: categories {sorted(missing)} not among the configured classes {order}")
    cls_of = {c["id"]: order.index(str(c["name"])) for c in cats}
    images, by_id = [], {}
    for i, im in enumerate(coco["images"]):
        for key in ("id", "file_name", "width", "height"):
            if key not in im:
                raise LabelError(f"{path}: images[{i}] has no '{key}'")
        by_id[im["id"]] = len(images)
        images.append(im)
    labels: list[list[Label]] = [[] for _ in images]
    for i, ann in enumerate(coco["annotations"]):
        where = f"{path}: annotations[{i}] (id {ann.get('id')})"
        if ann.get("image_id") not in by_id:
            raise LabelError(f"{where}: image_id {ann.get('image_id')!r} not in images")
        if ann.get("category_id") not in cls_of:
            raise LabelError(f"{where}: category_id {ann.get('category_id')!r} not in categories")
        im = images[by_id[ann["image_id"]]]
        w, h = int(im["width"]), int(im["height"])
        cls = cls_of[ann["category_id"]]
        bbox = ann.get("bbox")
        if bbox is not None:
            x, y, bw, bh = (float(v) for v in bbox)
            if bw <= 0 or bh <= 0 or x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                raise LabelError(f"{where}: bbox {bbox} outside the {w}x{h} image or empty")
        seg = ann.get("segmentation")
        if task == "segment":
            if isinstance(seg, dict):
                try:
                    check_rle_size(seg, h, w, Path(images_dir) / im["file_name"])
                except LabelError as exc:
                    raise LabelError(f"{where}: {exc}") from None
                poly = _rle_polygon(seg, h, w)
            elif isinstance(seg, list) and seg:
                parts = [np.asarray(s, dtype=np.float64) for s in seg]
                if any(p.size < 6 or p.size % 2 for p in parts):
                    raise LabelError(f"{where}: polygon with fewer than 3 points or an odd coordinate count")
                poly = _coco_polygon_to_norm(max(parts, key=len).tolist(), w, h)
            else:
                raise LabelError(f"{where}: no segmentation (task segment needs polygons or RLE)")
            if poly is not None:
                labels[by_id[ann["image_id"]]].append(Label(cls, "polygon", poly))
        else:
            if bbox is None:
                raise LabelError(f"{where}: no bbox")
            x, y, bw, bh = (float(v) for v in bbox)
            box = np.clip([(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h], 0, 1)
            labels[by_id[ann["image_id"]]].append(Label(cls, "box", box))
    root = Path(images_dir)
    paths = [_inside(root / im["file_name"], within, f"{path}: image {im['id']}") for im in images]
    for p in paths:
        if not p.is_file():
            raise LabelError(f"{path}: image {p} listed in the JSON does not exist")
    return paths, labels, order


def label_row(label: Label, task: str) -> str:
    """One YOLO row for the task (a polygon in a detect dataset becomes its box)."""
    if task == "detect":
        x0, y0, x1, y1 = label.xyxy()
        vals = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
    else:
        vals = label.coords.ravel().tolist()
    return f"{label.cls} " + " ".join(f"{v:.6f}" for v in vals)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the image header."""
    with Image.open(path) as im:
        return im.size


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def to_coco(split: Split, names: list[str], task: str, file_names: list[str]) -> dict[str, Any]:
    """COCO ground truth of a split: image ids 0..n-1 in split order, category id = class + 1."""
    images, anns = [], []
    for i, (img, labels) in enumerate(zip(split.images, split.labels, strict=True)):
        w, h = image_size(img)
        images.append({"id": i, "file_name": file_names[i], "width": w, "height": h})
        for lab in labels:
            x0, y0, x1, y1 = lab.xyxy() * [w, h, w, h]
            ann = {
                "id": len(anns) + 1,
                "image_id": i,
                "category_id": lab.cls + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0,
            }
            if lab.kind == "box":
                ann["area"] = (x1 - x0) * (y1 - y0)
            else:
                pts = lab.coords * [w, h]
                if task == "segment":
                    ann["segmentation"] = [pts.ravel().tolist()]
                else:  # obb: the corners, for reference (pycocotools scores the axis-aligned box)
                    ann["obb"] = pts.ravel().tolist()
                ann["area"] = _polygon_area(pts)
            anns.append(ann)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def materialise(ds: Dataset, out_dir: str | Path, task: str) -> dict[str, Any]:
    """Write the validated dataset as a YOLO folder Ultralytics trains on (images hard-linked,
    labels rewritten) plus `coco_<split>.json` ground truth; returns the dataset facts.

    Image names are made unique per split (`<index>_<stem><ext>`), so sub-folders of the source may
    repeat names. The folder is built next to `out_dir` and renamed into place.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    facts: dict[str, Any] = {"names": ds.names, "task": task, "source": ds.origin, "splits": {}}
    for split, sp in ds.splits.items():
        names = []
        for i, (img, labels) in enumerate(zip(sp.images, sp.labels, strict=True)):
            name = f"{i:06d}_{img.stem}{img.suffix.lower()}"
            names.append(f"images/{split}/{name}")
            _link(img, tmp / "images" / split / name)
            rows = [label_row(lab, task) for lab in labels]
            dst = tmp / "labels" / split / f"{i:06d}_{img.stem}.txt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text("\n".join(rows) + ("\n" if rows else ""))
        coco = to_coco(sp, ds.names, task, names)
        (tmp / f"coco_{split}.json").write_text(json.dumps(coco))
        per_class = np.bincount([lab.cls for ls in sp.labels for lab in ls], minlength=len(ds.names))
        facts["splits"][split] = {
            "images": len(sp.images),
            "objects": int(per_class.sum()),
            "empty_images": sum(1 for ls in sp.labels if not ls),
            "per_class": dict(zip(ds.names, per_class.tolist(), strict=True)),
        }
    data = {"path": str(out_dir.resolve()), "names": dict(enumerate(ds.names))}
    data.update({s: f"images/{s}" for s in ds.splits})
    (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp / "dataset.json").write_text(json.dumps(facts, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return facts


def read_dataset(
    root: str | Path, spec: dict[str, Any], task: str, allow_outside_root: bool = False
) -> Dataset:
    """The labelled data of a use case (`detection.data`): a YOLO YAML or COCO JSON per split.
    Every image path must resolve under `root` (LabelError outside_root) unless `allow_outside_root`."""
    root = Path(root)
    within = None if allow_outside_root else Root(root)
    if spec["format"] == "yolo":
        return read_yolo(root / spec["yaml"], task, within)
    names = spec.get("names") or None
    splits = {}
    for split in SPLITS:
        if split in spec.get("coco", {}):
            s = spec["coco"][split]
            paths, labels, names = read_coco(
                root / s["annotations"], root / s.get("images", "."), task, names, within
            )
            splits[split] = Split(paths, labels)
    if "train" not in splits or "val" not in splits:
        raise LabelError(f"detection.data.coco needs train and val entries (has {sorted(splits)})")
    return Dataset(list(names), splits, str(root))

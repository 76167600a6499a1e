"""The training manifest: one row per labelled image with a content-hash id, size, label and split."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aquaflow.data import imaging
from aquaflow.io import sha256_bytes

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["id", "path", "sha256", "label", "width", "height", "split"]
REJECTED_COLUMNS = ["path", "reason", "detail"]


# Why a listing passed over a file (the `reason` of Listing.skipped).
SKIP_HIDDEN = "hidden"  # .DS_Store, ._name.jpg (macOS resource forks), .thumbnails ...
SKIP_EXTENSION = "extension"  # not one of the configured extensions (.lst, .csv, Thumbs.db ...)
SKIP_NOT_REGULAR = "not_a_regular_file"  # FIFO, socket, device: reading would block or never end


@dataclass
class Listing:
    """The image paths found under a folder (relative, sorted) and what was passed over, and why."""

    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def skipped_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r for _, r in self.skipped).items()))


def scan_folder(root: str | Path, extensions: tuple[str, ...] = imaging.IMAGE_EXTENSIONS) -> Listing:
    """Walk `root` with os.scandir (no per-file stat for regular entries).

    Every entry that is not a folder is either listed or skipped with a reason, so the files
    under `root` always number len(paths) + len(skipped). A hidden folder (.snapshot, .thumbnails)
    is skipped as one entry, not entered. Symbolic links are listed by name, never followed into
    folders (a dangling link is listed, then rejected as broken_link when read). File names that
    are not valid UTF-8 come back surrogate-escaped (os.fsencode gives the original bytes back).
    """
    root = Path(root)
    exts = tuple(e.lower() for e in extensions)
    out = Listing()
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for entry in it:
                rel = os.path.relpath(entry.path, root)
                if entry.name.startswith("."):
                    out.skipped.append((rel, SKIP_HIDDEN))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif not entry.name.lower().endswith(exts):
                    out.skipped.append((rel, SKIP_EXTENSION))
                elif not (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
                    out.skipped.append((rel, SKIP_NOT_REGULAR))
                else:
                    out.paths.append(rel)
    out.paths.sort()
    out.skipped.sort()
    return out


def list_images(root: str | Path, extensions: tuple[str, ...] = imaging.IMAGE_EXTENSIONS) -> list[str]:
    """Image paths under `root`, relative and sorted (see scan_folder for what is skipped)."""
    return scan_folder(root, extensions).paths


NO_LABEL = "no_label_folder"  # an image at the root of a class-folder dataset


def scan_class_folders(root: str | Path, extensions: tuple[str, ...]) -> pd.DataFrame:
    """Images in <root>/<label>/**; the first folder level is the label.

    Images directly under <root> have no label folder: they are kept with label "" so that
    build_manifest rejects them with the reason no_label_folder instead of dropping them unseen.
    """
    listing = scan_folder(root, extensions)
    if listing.skipped:
        log.info("%s: skipped %s", root, listing.skipped_counts())
    rows = [(p, Path(p).parts[0] if len(Path(p).parts) > 1 else "") for p in listing.paths]
    return pd.DataFrame(rows, columns=["path", "label"])


def read_ecotaxa_tsv(path: str | Path) -> pd.DataFrame:
    """Read an EcoTaxa TSV (header row, then a [t]/[f] type row, then data)."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    if len(df) and all(str(v).strip().lower() in ("[t]", "[f]") for v in df.iloc[0]):
        df = df.iloc[1:].reset_index(drop=True)
    df.columns = [c.strip().lower() for c in df.columns]
    return df


def scan_ecotaxa(root: str | Path) -> pd.DataFrame:
    """Images listed in every ecotaxa*.tsv under root, labelled by object_annotation_category."""
    root = Path(root)
    frames = []
    for tsv in sorted(root.rglob("ecotaxa*.tsv")):
        df = read_ecotaxa_tsv(tsv)
        missing = {"img_file_name", "object_annotation_category"} - set(df.columns)
        if missing:
            raise ValueError(f"{tsv}: missing EcoTaxa column(s) {sorted(missing)}")
        rel = tsv.parent.relative_to(root)
        frames.append(
            pd.DataFrame(
                {
                    "path": [str(rel / f) for f in df["img_file_name"]],
                    "label": df["object_annotation_category"].str.strip(),
                }
            )
        )
    if not frames:
        raise ValueError(f"{root}: no ecotaxa*.tsv file found")
    df = pd.concat(frames, ignore_index=True)
    return df[df["label"] != ""].reset_index(drop=True)


def read_split_file(path: str | Path) -> list[str]:
    """planktonclas-style split file: one `relative/path [label_index]` per line."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            out.append(line.rsplit(" ", 1)[0] if line.rsplit(" ", 1)[-1].isdigit() else line)
    return out


def stratified_split(labels: pd.Series, val: float, test: float, seed: int) -> pd.Series:
    """Seeded per-class split; every class with >= 3 items gets at least one val and test item."""
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=labels.index, dtype=object)
    for label in sorted(labels.unique()):
        idx = labels.index[labels == label].to_numpy()
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = round(n * test)
        n_val = round(n * val)
        if n >= 3:
            n_test = max(n_test, 1) if test > 0 else 0
            n_val = max(n_val, 1) if val > 0 else 0
        split[idx[:n_test]] = "test"
        split[idx[n_test : n_test + n_val]] = "val"
    return split


def build_manifest(
    root: str | Path,
    dataset: dict[str, Any],
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    allow_outside_root: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Scan a fetched dataset; return (manifest, rejected, classes).

    Each image is read once: its sha256 gives the id, decoding gives the size. Unreadable images
    and exact duplicates go to `rejected` with a reason; nothing is silently dropped. An image whose
    path (an EcoTaxa `img_file_name`, a link in a class folder) resolves outside the images folder
    is rejected as outside_root without being read, unless `allow_outside_root`.
    """
    from aquaflow.data.roots import Root

    root = Path(root)
    images_root = root / dataset.get("images", ".")
    within = None if allow_outside_root else Root(images_root)
    exts = tuple(dataset["extensions"])
    if dataset["layout"] == "ecotaxa":
        items = scan_ecotaxa(images_root)
    else:
        items = scan_class_folders(images_root, exts)
    if items.empty:
        raise ValueError(f"{images_root}: no labelled images found (layout {dataset['layout']})")

    rows, rejected, seen = [], [], {}
    for rec in items.itertuples(index=False):
        shown = imaging.display_path(rec.path)
        if shown != rec.path:  # not valid UTF-8: the manifest (Parquet) can only hold UTF-8 paths
            rejected.append((shown, imaging.BAD_FILE_NAME, "file name is not valid UTF-8; rename the file"))
            continue
        if not rec.label:
            rejected.append(
                (rec.path, NO_LABEL, "image at the root of the dataset: put it in a <label>/ folder")
            )
            continue
        try:
            if within is not None:
                within.check(images_root / rec.path)
            data = imaging.read_bytes(images_root / rec.path)
            digest = sha256_bytes(data)
            dec = imaging.decode(data, max_pixels)
        except imaging.Rejected as rej:
            rejected.append((rec.path, rej.reason, rej.detail))
            continue
        if digest in seen:
            rejected.append((rec.path, "duplicate", f"same content as {seen[digest]}"))
            continue
        seen[digest] = rec.path
        rows.append((digest[:16], rec.path, digest, rec.label, dec.width, dec.height))
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS[:-1])

    if dataset.get("splits"):
        split_of: dict[str, str] = {}
        for split_name, file in dataset["splits"].items():
            for p in read_split_file(root / file):
                split_of[os.path.normpath(p)] = split_name
        manifest["split"] = [split_of.get(os.path.normpath(p)) for p in manifest["path"]]
        unlisted = manifest["split"].isna()
        for p in manifest.loc[unlisted, "path"]:
            rejected.append((p, "not_in_split_files", "listed in none of the split files"))
        manifest = manifest[~unlisted].reset_index(drop=True)
    else:  # split what could be read, so every split gets its share of readable images
        s = dataset["split"]
        manifest["split"] = stratified_split(manifest["label"], s["val"], s["test"], s["seed"])

    manifest["width"] = manifest["width"].astype("int32")
    manifest["height"] = manifest["height"].astype("int32")
    classes = resolve_classes(root, dataset, manifest["label"])
    unknown = sorted(set(manifest["label"]) - set(classes))
    if unknown:
        raise ValueError(f"labels not in the configured classes: {unknown}")
    manifest = manifest.sort_values(["split", "label", "path"], kind="stable").reset_index(drop=True)
    return manifest, pd.DataFrame(rejected, columns=REJECTED_COLUMNS), classes


def resolve_classes(root: Path, dataset: dict[str, Any], labels: pd.Series) -> list[str]:
    """Class order: explicit list, else the classes file, else sorted labels."""
    if dataset.get("classes"):
        return list(dataset["classes"])
    if dataset.get("classes_file"):
        names = [c.strip() for c in (root / dataset["classes_file"]).read_text().splitlines()]
        return [c for c in names if c]
    return sorted(labels.unique())


def manifest_images_root(raw: str | Path, dataset: dict[str, Any]) -> Path:
    return Path(raw) / dataset.get("images", ".")


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Hash of (id, label, split) rows: identifies the training data independent of file paths."""
    rows = manifest.sort_values("id")[["id", "label", "split"]].to_csv(index=False)
    return hashlib.sha256(rows.encode()).hexdigest()

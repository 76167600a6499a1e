"""Images to jobs that share no file system with the host that sees them: one bundle per shard.

Without a shared file system (Kubernetes pods, `--shared-fs-usage none`) a job reads only its
declared inputs, fetched from the default storage (S3). The images a campaign lists are not files
of the workflow, so the host that can read them (a local rule) packs each shard's images into one
ZIP: `{campaign}/staged/{scatteritem}.zip`, the shard's only image input. The DAG keeps one node
per shard whatever the number of images.

A bundle holds `rows.parquet` (the shard's rows of inputs.parquet, unchanged: predictions keep the
original `source`), `staged.json` (per row: the member holding its file, or the rejection reason
found while staging; the sha256 of the whole inputs.parquet, so the run id equals a local run's)
and `files/<n>`, one member per distinct file (a FlowCam collage is stored once for all its rows).

Only files that pass the image checks are packed: a row whose path resolves outside its input's
root is rejected as `outside_root` without being opened, and a file whose header is not an image's
(a credentials file named by a manifest row) is rejected as `not_an_image` and never leaves the host.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, UnidentifiedImageError

from aquaflow.data import imaging
from aquaflow.data.inputs import read_targets
from aquaflow.engine.items import shard_slice
from aquaflow.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

ROWS, INDEX, FILES = "rows.parquet", "staged.json", "files/"


def _local(path: str | bytes, logical_root: str, local_root: str) -> str | bytes:
    """A path under `logical_root` (as inputs.parquet names it) -> where this job has the file."""
    if not logical_root or logical_root == local_root:
        return path
    raw, lroot = os.fsencode(path), os.fsencode(logical_root).rstrip(b"/") + b"/"
    if raw.startswith(lroot):
        moved = os.fsencode(local_root).rstrip(b"/") + b"/" + raw[len(lroot) :]
        return moved if isinstance(path, bytes) else os.fsdecode(moved)
    return path


def image_header(data: bytes) -> None:
    """Raise Rejected unless `data` starts like an image the decoder knows (header only, no pixels
    decoded; the same reasons as `imaging.decode`): what staging checks before a file may leave
    the host."""
    if data[:4] in imaging.TIFF_MAGIC:  # the decoder's OpenCV fallback reads TIFFs Pillow cannot
        return
    try:
        with Image.open(io.BytesIO(data)):
            pass
    except Image.DecompressionBombError as exc:
        raise imaging.Rejected(imaging.TOO_LARGE, f"Pillow's decompression-bomb guard: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise imaging.Rejected(imaging.NOT_AN_IMAGE, "not an image format Pillow can read") from exc
    except Exception:  # an image format whose header is damaged: the shard reports exactly why
        return


def stage(
    inputs_path: str | Path,
    bundles: dict[str, str | Path],
    *,
    logical_root: str = "",
    local_root: str = "",
) -> dict[str, int]:
    """Write one bundle per scatter item (`bundles`: scatteritem -> path); return counts.

    `logical_root`/`local_root`: where inputs.parquet says the dataset folder is, and where this
    job has it (the local copy of a storage directory). Unreadable files are not an error: their
    rejection reason is recorded and the shard reports it as a local run would.
    """

    table = pd.read_parquet(inputs_path)
    digest = sha256_file(inputs_path)
    counts = {"rows": 0, "files": 0, "rejected": 0, "bytes": 0}
    for item, bundle in bundles.items():
        part = table.iloc[shard_slice(len(table), item)].reset_index(drop=True)
        members: list[str | None] = []
        rejected: dict[str, tuple[str, str]] = {}
        stored: dict[str | bytes, str] = {}
        with atomic_path(bundle) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            buf = io.BytesIO()
            part.to_parquet(buf, index=False)
            zf.writestr(ROWS, buf.getvalue())
            for i, src in enumerate(read_targets(part)):
                if not isinstance(src, imaging.Rejected) and src in stored:
                    members.append(stored[src])
                    continue
                try:
                    if isinstance(src, imaging.Rejected):  # outside its root: never opened
                        raise src
                    data = imaging.read_bytes(_local(src, logical_root, local_root))
                    image_header(data)
                except imaging.Rejected as rej:
                    members.append(None)
                    rejected[str(i)] = (rej.reason, rej.detail)
                    continue
                name = f"{FILES}{len(stored):07d}"
                zf.writestr(name, data)
                stored[src] = name
                members.append(name)
                counts["bytes"] += len(data)
            index = {"inputs_sha256": digest, "members": members, "rejected": rejected}
            zf.writestr(INDEX, json.dumps(index))
        counts["rows"] += len(part)
        counts["files"] += len(stored)
        counts["rejected"] += len(rejected)
        log.info("staged %s: %d rows, %d files, %d rejected", item, len(part), len(stored), len(rejected))
    return counts


def open_bundle(bundle: str | Path, dest: str | Path) -> tuple[pd.DataFrame, list, str]:
    """Unpack a bundle's files into `dest`; return (rows, what to read per row, inputs sha256).

    What to read is a path, or the imaging.Rejected found while staging (the shard engine
    reports it as if it had met it itself).
    """
    dest = Path(dest)
    with zipfile.ZipFile(bundle) as zf:
        rows = pd.read_parquet(io.BytesIO(zf.read(ROWS)))
        index = json.loads(zf.read(INDEX))
        for name in sorted({m for m in index["members"] if m}):
            zf.extract(name, dest)
    reads: list[Any] = []
    for i, member in enumerate(index["members"]):
        if member is None:
            reason, detail = index["rejected"][str(i)]
            reads.append(imaging.Rejected(reason, detail))
        else:
            reads.append(str(dest / member))
    return rows, reads, index["inputs_sha256"]


@contextlib.contextmanager
def shard_part(inputs_path: str | Path, scatteritem: str, workdir: str | Path) -> Iterator[tuple]:
    """(rows, what to read per row or None for their sources, inputs.parquet sha256) of one shard:
    its block of the campaign's inputs.parquet, or its staged bundle (.zip) unpacked under
    `workdir` for as long as the context lasts."""

    if str(inputs_path).endswith(".zip"):
        with tempfile.TemporaryDirectory(dir=workdir, prefix=".staged-") as tmp:
            part, reads, digest = open_bundle(inputs_path, tmp)
            log.info("shard %s: %d rows from bundle %s", scatteritem, len(part), inputs_path)
            yield part, reads, digest
        return
    table = pd.read_parquet(inputs_path)
    part = table.iloc[shard_slice(len(table), scatteritem)].reset_index(drop=True)
    log.info("shard %s: rows %d of %d", scatteritem, len(part), len(table))
    yield part, None, sha256_file(inputs_path)


def source_reader(table: pd.DataFrame, bundles: list[str | Path] | None = None) -> Callable[[str], bytes]:
    """read(source) -> bytes for the rows of a predictions table: from the campaign's staged bundles
    when there are any (no shared file system), else the file itself (its exact bytes from
    `source_hex` for names that are not valid UTF-8)."""
    if bundles:
        return BundleReader(bundles).read_bytes
    hexes = table["source_hex"] if "source_hex" in table else [""] * len(table)
    exact = {s: bytes.fromhex(h) for s, h in zip(table["source"], hexes, strict=True) if h}
    return lambda source: imaging.read_bytes(exact.get(source, source))


class BundleReader:
    """Bytes of a campaign's files by their `source` (as in predictions), from its shard bundles."""

    def __init__(self, bundles: list[str | Path]):
        self._where: dict[str, tuple[str, str]] = {}
        for bundle in bundles:
            with zipfile.ZipFile(bundle) as zf:
                rows = pd.read_parquet(io.BytesIO(zf.read(ROWS)), columns=["source"])
                index = json.loads(zf.read(INDEX))
            for src, member in zip(rows["source"], index["members"], strict=True):
                if member:
                    self._where[src] = (str(bundle), member)

    def read_bytes(self, source: str) -> bytes:
        if source not in self._where:
            raise imaging.Rejected(imaging.MISSING, f"{source} is in no staged bundle")
        bundle, member = self._where[source]
        with zipfile.ZipFile(bundle) as zf:
            return zf.read(member)

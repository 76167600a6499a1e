"""Pretrained backbone weights as a hash-checked source, like data: an installed package, a path,
a URL or a DOI (pooch). Only the fetch rule downloads; training reads the local file.

Spec (use-case `model.pretrained`): {kind: package|path|url|doi, package, file, path, url, doi,
sha256, keys}. `keys` names the tensor naming of the file (see aquaflow.backends.torch_model.load_backbone).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from aquaflow.data.fetch import FetchError, _download, package_root
from aquaflow.io import atomic_path, redact_uri, redacted, sha256_file

log = logging.getLogger(__name__)

KINDS = ("package", "path", "url", "doi")


def _require(spec: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if not spec.get(k)]
    if missing:
        names = ", ".join(f"model.pretrained.{k}" for k in missing)
        raise FetchError(f"model.pretrained (kind {spec.get('kind')!r}) needs {names}")


def file_name(spec: dict[str, Any]) -> str:
    """Name of the local weights file: `file` when given, else the last part of the path or URL."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FetchError(f"model.pretrained.kind: {kind!r} is not one of {list(KINDS)}")
    if kind in ("package", "doi"):
        _require(spec, "file")
    if spec.get("file"):
        return PurePosixPath(spec["file"]).name
    if kind == "path":
        _require(spec, "path")
        return Path(spec["path"]).name
    _require(spec, "url")
    return spec["url"].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def local_source(spec: dict[str, Any]) -> Path | None:
    """The weights file already on this machine (kind package or path), else None (url, doi)."""
    kind = spec["kind"]
    if kind == "package":
        _require(spec, "package", "file")
        path = package_root(spec["package"]) / spec["file"]
        if not path.is_file():
            raise FetchError(f"model.pretrained: package {spec['package']!r} has no file {spec['file']!r}")
        return path
    if kind == "path":
        _require(spec, "path")
        path = Path(spec["path"]).expanduser()
        if not path.is_file():
            raise FetchError(f"model.pretrained.path: no such file: {path}")
        return path
    return None


def verify(path: str | Path, spec: dict[str, Any]) -> str:
    """sha256 of `path`; raises FetchError when it differs from the spec's pin."""
    got = sha256_file(path)
    want = (spec.get("sha256") or "").lower().removeprefix("sha256:")
    if want and got != want:
        raise FetchError(f"{path}: sha256 mismatch for model.pretrained: expected {want}, got {got}")
    return got


def fetch(spec: dict[str, Any], dest: str | Path, cache: str | Path) -> dict[str, Any]:
    """Materialise the weights file at `dest` (atomically, hash-checked); return a provenance record.

    package/path: copy the local file; url/doi: download with pooch into `cache` (pooch checks the
    sha256 before the file appears), then copy.
    """
    dest = Path(dest)
    kind = spec["kind"]
    src = local_source(spec)
    if src is None:
        _require(spec, *(("url", "sha256") if kind == "url" else ("doi", "file", "sha256")))
        url = spec["url"] if kind == "url" else f"doi:{spec['doi']}/{spec['file']}"
        want = spec["sha256"].lower().removeprefix("sha256:")
        src = _download(url, f"sha256:{want}", Path(cache))
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        digest = verify(tmp, spec)
    log.info("pretrained weights (%s) %s -> %s sha256 %s", kind, src, dest, digest)
    return {"kind": kind, "location": redact_uri(str(src)), "sha256": digest}


def resolve(spec: dict[str, Any] | None, fetched: str | Path | None = None) -> Path | None:
    """The local weights file for training: the fetch rule's output when given, else (package,
    path) the file itself; hash-checked. url/doi need the fetched file (no network here)."""
    if not spec:
        return None
    path = Path(fetched) if fetched else local_source(spec)
    if path is None:
        raise FetchError(
            f"model.pretrained kind {spec['kind']!r}: the weights must be fetched first "
            f"(rule fetch_pretrained -> resources/<usecase>/pretrained/{file_name(spec)})"
        )
    verify(path, spec)
    return path


def provenance(spec: dict[str, Any] | None, path: Path | None, report: dict[str, Any] | None) -> Any:
    """What the model card records about the starting weights (None = random init)."""
    if not spec or path is None:
        return None
    keep = ("kind", "package", "file", "path", "url", "doi", "keys")
    return {
        **redacted({k: spec[k] for k in keep if spec.get(k)}),
        "sha256": sha256_file(path),
        "tensors_loaded": (report or {}).get("tensors_loaded"),
    }

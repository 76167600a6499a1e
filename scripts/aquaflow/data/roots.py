"""Paths read from data stay under their root.

A FlowCam `.lst` names its collages, a manifest its images, an EcoTaxa TSV its `img_file_name`, a
YOLO `data.yaml` its `path:` and split lists, a COCO file its `file_name`; a folder may hold
symbolic links. Any of them can name a file elsewhere (an absolute path, `..`, a link), which would
then be read, predicted, packed into a staging bundle or cropped into an export. A path is checked
after resolving every link and `..` (`os.path.realpath`): outside its root (the run, manifest,
dataset or input folder) it is rejected with the reason `outside_root`, unless the use case sets
`allow_paths_outside_root: true` (for sites whose data really live elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from aquaflow.data.imaging import Rejected, display_path

OUTSIDE_ROOT = "outside_root"
OPT_OUT = "allow_paths_outside_root"


def _bytes(path: str | bytes | os.PathLike) -> bytes:
    return os.fsencode(path)


def _prefix(root: str | bytes | os.PathLike) -> bytes:
    return os.path.realpath(_bytes(root)).rstrip(b"/") + b"/"


class Root:
    """One root folder; `contains(path)` resolves the path's links and `..` (folders cached, so a
    path costs one lstat unless it is itself a link)."""

    def __init__(self, root: str | bytes | os.PathLike):
        self.root = root
        self.prefix = _prefix(root)
        self._dirs: dict[bytes, bytes] = {}

    def resolve(self, path: str | bytes | os.PathLike) -> bytes:
        raw = _bytes(path)  # no lexical normpath: `link/..` must be resolved as open() would
        head, name = os.path.split(raw)
        if name in (b"", b".", b"..") or os.path.islink(raw):
            return os.path.realpath(raw)
        if head not in self._dirs:
            self._dirs[head] = os.path.realpath(head or b".")
        return os.path.join(self._dirs[head], name)

    def contains(self, path: str | bytes | os.PathLike) -> bool:
        """True when `path` resolves under the root. An empty path or one holding a NUL byte counts
        as inside: no file has that name, and reading it reports bad_file_name."""
        raw = _bytes(path)
        if not raw or b"\x00" in raw:
            return True
        return (self.resolve(raw) + b"/").startswith(self.prefix)

    def detail(self, path: str | bytes | os.PathLike) -> str:
        return (
            f"{display_path(path)} resolves outside {display_path(self.root)}; set "
            f"`{OPT_OUT}: true` in the use case only if the data really live elsewhere"
        )

    def check(self, path: str | bytes | os.PathLike) -> None:
        """Raise Rejected(outside_root) when `path` leaves the root."""
        if not self.contains(path):
            raise Rejected(OUTSIDE_ROOT, self.detail(path))


def outside(paths: Iterable[str | bytes], root: str | bytes | os.PathLike) -> list[bool]:
    """Per path: does it resolve outside `root`? (each distinct path checked once)"""
    r, seen = Root(root), {}
    out = []
    for p in paths:
        if p not in seen:
            seen[p] = not r.contains(p)
        out.append(seen[p])
    return out

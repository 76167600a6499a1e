"""Small I/O helpers shared by every step: atomic writes, hashing, tables and JSON."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 1 << 20
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk, file-size limit or quota
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(kind: str) -> Path:
    """This machine's cache of derived files of one `kind` (e.g. `onnx`): $AQUAFLOW_CACHE/kind,
    else $XDG_CACHE_HOME/aquaflow/kind, else ~/.cache/aquaflow/kind (not created here)."""
    root = os.environ.get("AQUAFLOW_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "aquaflow"
    return Path(root) / kind


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed earlier run
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600: outputs readable like any other file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise OSError(
            exc.errno,
            f"{os.strerror(exc.errno)} while writing {target}: nothing of it was kept; "
            "free space and run the same command again",
        ) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_parquet(df: pd.DataFrame | pa.Table, path: str | os.PathLike) -> None:
    """Write a table atomically, without the pandas index and without wall-clock metadata."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


_LOCAL_SCHEMES = ("file", "sqlite")


def redact_uri(value: str) -> str:
    """A remote URI without its credentials, query string and fragment (a token in `?sig=...` or
    `user:pass@`): what cards, MLflow params and run files record. Paths, local (file, sqlite)
    URIs and other text are returned unchanged."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.scheme in _LOCAL_SCHEMES or not parts.netloc:
        return value
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _public_path(path: str, root: Path) -> str:
    """A local path as published: relative to `root` when under it, else its file name alone."""
    p = Path(os.path.expanduser(path))
    if not p.is_absolute():
        return p.as_posix()
    try:
        return Path(os.path.abspath(p)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return p.name


def public_store(value: str, root: str | os.PathLike | None = None) -> str:
    """A SQLite URI (an MLflow store) as published: `sqlite:///<path relative to root>` (default
    root: the working directory, the workflow's), with `..` when the file lies outside, so that
    SQLAlchemy and MLflow still open it from there (`sqlite:///rel` is relative to the working
    directory, `sqlite:////abs` absolute). Query and fragment dropped; other text unchanged."""
    if not value.startswith("sqlite:///"):
        return value
    path = urlsplit(value).path[1:]
    if Path(path).is_absolute():
        base = os.path.abspath(root if root is not None else Path.cwd())
        path = Path(os.path.relpath(os.path.abspath(path), base)).as_posix()
    return f"sqlite:///{path}"


def public_uri(value: str, root: str | os.PathLike | None = None) -> str:
    """A URI or path as published in a crate or a summary: redact_uri, a SQLite store as
    public_store, a local path or file URI relative to `root` (default: the working directory,
    i.e. the workflow's), or just its file name when it lies outside. Other text is unchanged."""
    base = Path(root) if root is not None else Path.cwd()
    if value.startswith(("/", "~")):
        return _public_path(value, base)
    if value.startswith("sqlite:///"):
        return public_store(value, base)
    parts = urlsplit(value) if "://" in value else None
    if parts is not None and parts.scheme in _LOCAL_SCHEMES:  # file:///abs
        return f"{parts.scheme}:{_public_path(parts.path, base)}"
    return redact_uri(value)


def _each_string(obj: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, Path):
        return fn(str(obj))
    if isinstance(obj, dict):
        return {k: _each_string(v, fn) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_each_string(v, fn) for v in obj]
    return obj


def redacted(obj: Any) -> Any:
    """`obj` (dicts, lists, strings) with every string passed through redact_uri."""
    return _each_string(obj, redact_uri)


def public(obj: Any, root: str | os.PathLike | None = None) -> Any:
    """`obj` (dicts, lists, strings) with every string passed through public_uri."""
    return _each_string(obj, lambda v: public_uri(v, root))

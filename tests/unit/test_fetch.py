import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from aquaflow.data.fetch import FetchError, fetch, safe_extract


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_package_source_copies_the_demo_images(tmp_path):
    rec = fetch(
        {"kind": "package", "package": "planktonclas", "subdir": "resources"},
        tmp_path / "raw",
        tmp_path / "cache",
    )
    jpgs = list((tmp_path / "raw" / "demo-images").rglob("*.jpg"))
    assert len(jpgs) == 105
    assert len({p.parent.name for p in jpgs}) == 6
    assert (tmp_path / "raw" / "dataset_files" / "train.txt").is_file()
    assert rec["files"] >= 105


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(FetchError, match="not installed"):
        fetch({"kind": "package", "package": "no_such_pkg_xyz"}, tmp_path / "raw", tmp_path)
    assert not (tmp_path / "raw").exists()


def test_path_archive_with_hash(tmp_path):
    archive = make_zip(tmp_path / "data.zip", {"a/x.txt": b"x", "b/y.txt": b"yy"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    fetch({"kind": "path", "path": str(archive), "sha256": digest}, tmp_path / "raw", tmp_path)
    assert (tmp_path / "raw" / "b" / "y.txt").read_bytes() == b"yy"
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch({"kind": "path", "path": str(archive), "sha256": "0" * 64}, tmp_path / "raw2", tmp_path)
    assert not (tmp_path / "raw2").exists()


def test_zip_path_traversal_is_refused(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"ok.txt": b"1", "../../evil.txt": b"2"})
    with pytest.raises(FetchError, match="unsafe path"):
        fetch({"kind": "path", "path": str(archive)}, tmp_path / "raw", tmp_path)
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_tar_links_are_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(FetchError, match="link"):
        safe_extract(archive, tmp_path / "out")


def test_tar_gz_extracts(tmp_path):
    archive = tmp_path / "d.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        data = b"hello"
        info = tarfile.TarInfo("cls/img.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    fetch({"kind": "path", "path": str(archive)}, tmp_path / "raw", tmp_path)
    assert (tmp_path / "raw" / "cls" / "img.txt").read_bytes() == b"hello"


def test_url_source_downloads_and_checks_hash(tmp_path, http_server):
    www, base = http_server
    archive = make_zip(www / "set.zip", {"cls_a/1.txt": b"a", "cls_b/2.txt": b"b"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    rec = fetch(
        {"kind": "url", "url": f"{base}/set.zip", "sha256": digest}, tmp_path / "raw", tmp_path / "cache"
    )
    assert rec["files"] == 2
    assert (tmp_path / "raw" / "cls_b" / "2.txt").read_bytes() == b"b"


def test_url_wrong_hash_fails_and_leaves_no_file(tmp_path, http_server):
    www, base = http_server
    make_zip(www / "set.zip", {"a.txt": b"a"})
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"(?i)hash"):
        fetch({"kind": "url", "url": f"{base}/set.zip", "sha256": "1" * 64}, tmp_path / "raw", cache)
    assert not (tmp_path / "raw").exists()
    assert not any(p.is_file() for p in cache.rglob("*")), list(cache.rglob("*"))


def test_url_unreachable_is_a_fetch_error(tmp_path):
    with pytest.raises(FetchError, match="download failed"):
        fetch(
            {"kind": "url", "url": "http://127.0.0.1:9/none.zip", "sha256": "1" * 64},
            tmp_path / "raw",
            tmp_path / "cache",
        )

"""Fixtures for the cluster tests: a real one-node Slurm cluster and a flaky HTTP data server.

The cluster is started once for the tests in tests/cluster/ (package scope) by slurm-up.sh and
always stopped by slurm-down.sh, even when a test or the start-up fails. It needs root and apt
(CI: root on Debian); elsewhere the Slurm tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.server
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# One cluster per machine: the lock lives in /run (only root may create files there, unlike /tmp)
# and names the state folder of the session holding it, so that a later session can stop what a
# killed one left running. Each session's state folder is private (mkdtemp: root, mode 0700).
LOCK = Path("/run/aquaflow-slurm.lock")


def private_dir(path: str | Path) -> bool:
    """A real directory (not a link) owned by root with mode 0700: no other user put files in it."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700


def open_lock() -> int:
    """The machine-wide lock file, opened without following a link; refused unless root's own."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        pytest.fail(f"{LOCK} is not a root-owned private file (mode {stat.filemode(st.st_mode)}): remove it")
    return fd


def slurm_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the single-node Slurm cluster needs root (CI runs as root)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "Slurm is not installed and apt-get is not available to install it"
    return None


@pytest.fixture(scope="package")
def slurm_cluster():
    """A running one-node Slurm cluster (partitions cpu, gpu; one fake GPU); stopped afterwards."""
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    # One cluster per machine: a second pytest run waits here instead of fighting over /etc/slurm.
    fd = open_lock()
    with os.fdopen(fd, "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        earlier = lock.read().strip()
        if earlier and private_dir(earlier):  # leftovers of a session killed before its finalizer
            env = {**os.environ, "AQUAFLOW_SLURM_STATE": earlier}
            subprocess.run(["bash", str(HERE / "slurm-down.sh")], env=env, capture_output=True, timeout=120)
        state = Path(tempfile.mkdtemp(prefix="aquaflow-slurm-"))  # root-owned, mode 0700
        lock.seek(0)
        lock.truncate()
        lock.write(str(state))
        lock.flush()
        env = {**os.environ, "AQUAFLOW_SLURM_STATE": str(state)}
        try:
            up = subprocess.run(
                ["bash", str(HERE / "slurm-up.sh")], env=env, capture_output=True, text=True, timeout=900
            )
            if up.returncode != 0:
                pytest.fail(f"slurm-up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
            yield {"state": state, "up_seconds": time.monotonic() - t0}
        finally:
            down = subprocess.run(
                ["bash", str(HERE / "slurm-down.sh")], env=env, capture_output=True, text=True, timeout=120
            )
            if down.returncode != 0:
                print(f"slurm-down.sh failed ({down.returncode}):\n{down.stderr}")
            else:
                lock.seek(0)
                lock.truncate()
                lock.flush()
            fcntl.flock(lock, fcntl.LOCK_UN)


def zip_tree(root: Path, members: list[str], dest: Path) -> Path:
    """A deterministic zip of root/<member>/** (fixed timestamps, sorted names)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for member in members:
            for path in sorted((root / member).rglob("*")):
                if path.is_file():
                    info = zipfile.ZipInfo(str(path.relative_to(root)), date_time=(2025, 1, 1, 0, 0, 0))
                    zf.writestr(info, path.read_bytes())
    return dest


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; answers 500 while the server's `fail_next` budget lasts (fault injection)."""

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests.append(self.path)
            fail = server.fail_next > 0
            if fail:
                server.fail_next -= 1
        if fail:
            self.send_error(500, "injected fault")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def flaky_http_server(www: Path):
    handler = functools.partial(FlakyHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.lock = threading.Lock()
    server.requests = []
    server.fail_next = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="package")
def demo_zip_server(tmp_path_factory, planktonclas_resources):
    """The FlowCam demo images as set.zip on a local HTTP server that can be told to fail."""
    www = tmp_path_factory.mktemp("www")
    archive = zip_tree(planktonclas_resources, ["demo-images", "dataset_files"], www / "set.zip")
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    with flaky_http_server(www) as (server, base):
        yield server, {"kind": "url", "url": f"{base}/set.zip", "sha256": sha256}

"""Snakemake command lines forked from a process that has already imported Snakemake.

Each pytest worker starts one such process (`serve`) on its first workflow run. A run is a fresh
fork of it that does what `python -m snakemake ARGS` does: the given working directory,
environment, PYTHONPATH and standard streams, then `snakemake.cli.main(ARGS)` and its exit code.
Only the import of Snakemake and its executor plugins (about a CPU-second per run on the 2-core
machine) is paid once. Runs whose environment changes how the interpreter starts (another
PYTHONPATH, e.g. the network guard's sitecustomize) are started as new interpreters instead.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_SERVER: tuple[subprocess.Popen, str] | None = None
_LOCK = threading.Lock()


def _child(request: dict, fds: list[int]) -> None:
    """In the forked run: the request's streams, folder, environment and path, then Snakemake."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # as `python -m`: the working directory first, then PYTHONPATH, then the site path
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:0] = [request["cwd"], *extra]
        sys.argv = ["snakemake", *request["args"]]
        from snakemake.cli import main
        from snakemake.workflow import Workflow

        Workflow._rundir = os.getcwd()  # Snakemake reads it at import, i.e. in the start folder

        main(request["args"])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # reported on the run's stderr, as an interpreter would
        import traceback

        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream has nothing left to write
                stream.flush()
        os._exit(code)


def serve(path: str) -> None:
    """Import Snakemake, then fork one run per request on the socket `path` until the parent dies."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).parent.resolve():
        del sys.path[0]  # this script's folder: not on a `python -m snakemake` path
    import snakemake.cli  # noqa: F401 - the import each run would otherwise pay

    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-run monitors reap themselves
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(64)
    server.settimeout(2.0)
    assert threading.active_count() == 1, "forking needs a single-threaded server"
    print("ready", flush=True)
    while os.getppid() == parent:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if os.fork() == 0:  # the monitor: forks the run, reports its pid and then its exit code
            try:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                pid = os.fork()
                if pid == 0:
                    conn.close()
                    _child(json.loads(message), fds)
                for fd in fds:
                    os.close(fd)
                conn.send(str(pid).encode())
                _, status = os.waitpid(pid, 0)
                conn.send(str(os.waitstatus_to_exitcode(status)).encode())
            finally:  # also when the client has gone (a timeout): never back into the accept loop
                os._exit(0)
        conn.close()
        for fd in fds:
            os.close(fd)


def _stop(proc: subprocess.Popen, folder: Path) -> None:
    """At exit: end the server and remove its socket's folder."""
    proc.kill()
    proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


def _server() -> str:
    """This process's server socket, started on first use and stopped at exit."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or _SERVER[0].poll() is not None:
            path = tempfile.mkdtemp(prefix="aquaflow-smk-") + "/socket"
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            proc = subprocess.Popen(
                [sys.executable, __file__, path], env=env, stdout=subprocess.PIPE, text=True
            )
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the Snakemake fork server did not start ({proc.wait()})")
            atexit.register(_stop, proc, Path(path).parent)
            _SERVER = (proc, path)
        return _SERVER[1]


def forkable(env: dict[str, str], pythonpath: str) -> bool:
    """Whether a run with `env` may be forked: the server's interpreter start-up is the run's."""
    return os.environ.get("AQUAFLOW_TEST_FORK", "1") == "1" and env.get("PYTHONPATH") == pythonpath


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`python -m snakemake *args` in `cwd` with `env`, output captured as text (subprocess.run)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(os.devnull, "rb") as null,
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn,
    ):
        conn.connect(_server())
        request = {"args": list(args), "cwd": str(cwd), "env": env}
        socket.send_fds(conn, [json.dumps(request).encode()], [null.fileno(), out.fileno(), err.fileno()])
        conn.settimeout(timeout)
        pid = int(conn.recv(64))
        try:
            code = int(conn.recv(64))
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(["snakemake", *args], timeout) from None
        out.seek(0)
        err.seek(0)
        text = {"encoding": "utf-8", "errors": "replace"}
        return subprocess.CompletedProcess(
            ["snakemake", *args], code, out.read().decode(**text), err.read().decode(**text)
        )


if __name__ == "__main__":
    serve(sys.argv[1])

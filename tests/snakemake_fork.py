"""Snakemake command lines, and their step scripts, forked from a process that has already
imported Snakemake and the libraries the step scripts import.

Each pytest worker starts one such process (`serve`) on its first workflow run. A run is a fresh
fork of it that does what `python -m snakemake ARGS` does: the given working directory,
environment, PYTHONPATH and standard streams, then `snakemake.cli.main(ARGS)` and its exit code.
In a forked run, `sys.executable` is a small launcher (`python` in the server's folder): a step
script's `python SCRIPT` becomes a fresh fork of the server too, with the job's folder,
environment, streams and thread counts, which runs SCRIPT as `__main__`; any other command line
goes to the real interpreter. So the imports of Snakemake (about a CPU-second per run on the
2-core machine) and of torch, torchvision, timm, MLflow, scikit-learn... (2 to 6 CPU-seconds per
job) are paid once per worker; aquaflow itself is imported by each job, as its import-time code
must run there. Runs and jobs whose environment changes how the interpreter starts (another
PYTHONPATH, e.g. the network guard's sitecustomize, or another PYTHON* variable) are started as
new interpreters instead. `AQUAFLOW_TEST_FORK=0` forks nothing, `=runs` forks runs, not jobs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

_SERVER: tuple[subprocess.Popen, str] | None = None
_LOCK = threading.Lock()
# what step scripts import, loaded once by the server; never aquaflow (its import-time code, e.g.
# environment defaults, must run in each job) nor libraries that read the environment at import
# (ultralytics: YOLO_CONFIG_DIR, YOLO_OFFLINE) or that must load after another (TensorFlow)
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "PIL.Image",
    "yaml",
    "jsonschema",
    "scipy.stats",
    "sklearn.metrics",
    "matplotlib.pyplot",
    "torch",
    "torchvision",
    "timm",
    "onnxruntime",
    "mlflow",
    "threadpoolctl",
)
THREAD_VARS = {"OMP_NUM_THREADS": "openmp", "OPENBLAS_NUM_THREADS": "blas"}
LAUNCHER = """import json, os, signal, socket, sys

real, path, same = {real!r}, {socket!r}, {same!r}
args, env = sys.argv[1:], dict(os.environ)
mine = {{k: v for k, v in env.items() if k.startswith("PYTHON")}}
if len(args) != 1 or not args[0].endswith(".py") or mine != same:
    os.execv(real, [real, *args])
conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    conn.connect(path)
except OSError:  # the server has gone (its pytest worker ended): the real interpreter
    os.execv(real, [real, *args])
request = {{"script": os.path.abspath(args[0]), "cwd": os.getcwd(), "env": env}}
socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
pid = int(conn.recv(64))
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda sig, frame: os.kill(pid, sig))
code = int(conn.recv(64))
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def _enter(request: dict, fds: list[int]) -> list[str]:
    """In a fork: the request's streams, folder and environment; its PYTHONPATH entries."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    return [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]


def _exit_as_interpreter(body: Callable[[], object]) -> None:
    """Run `body`, then end the fork as an interpreter ends: its exit status (sys.excepthook and 1
    on an exception), non-daemon threads joined, atexit handlers run, streams flushed."""
    code = 1
    try:
        body()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # uncaught: to sys.excepthook (a step's may log it), as an interpreter does
        sys.excepthook(*sys.exc_info())
    finally:
        with contextlib.suppress(Exception):
            threading._shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream has nothing left to write
                stream.flush()
        os._exit(code)


def _run(request: dict, fds: list[int], launcher: str) -> None:
    """In the forked run: the request's streams, folder, environment and path, then Snakemake."""

    def body() -> None:
        extra = _enter(request, fds)
        # as `python -m`: the working directory first, then PYTHONPATH, then the site path
        sys.path[:0] = [request["cwd"], *extra]
        sys.argv = ["snakemake", *request["args"]]
        if request.get("jobs"):
            sys.executable = launcher  # step scripts' `python SCRIPT`: forked as well (_job)
        from snakemake.cli import main
        from snakemake.workflow import Workflow

        Workflow._rundir = os.getcwd()  # Snakemake reads it at import, i.e. in the start folder
        main(request["args"])

    _exit_as_interpreter(body)


def _thread_counts(env: dict[str, str], started: dict[str, str]) -> None:
    """The thread pools that the preloaded libraries sized at import from the server's environment,
    sized from the job's instead (Snakemake sets OMP_NUM_THREADS... to the job's threads)."""
    from threadpoolctl import threadpool_limits

    for var, api in THREAD_VARS.items():
        if env.get(var) != started.get(var):
            count = int(env.get(var) or os.cpu_count() or 1)
            threadpool_limits(count, user_api=api)
            if api == "openmp":
                import torch

                torch.set_num_threads(count)


def _job(request: dict, fds: list[int], started: dict[str, str]) -> None:
    """In a forked job: what `python SCRIPT` does, in the job's folder, environment and streams."""

    def body() -> None:
        extra = _enter(request, fds)
        _thread_counts(request["env"], started)
        script = request["script"]
        sys.path[:0] = [os.path.dirname(script), *extra]  # as `python SCRIPT`
        sys.argv = [script]
        runpy.run_path(script, run_name="__main__")

    _exit_as_interpreter(body)


def _launcher(path: str) -> str:
    """Write the job launcher beside the socket `path`; its path, the forked runs' sys.executable."""
    folder = Path(path).parent
    started = {k: v for k, v in os.environ.items() if k.startswith("PYTHON")}
    started["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "scripts")
    code = LAUNCHER.format(real=sys.executable, socket=path, same=started)
    (folder / "launcher.py").write_text(code)
    # -S -E: the launcher needs the standard library only, and starts in a few milliseconds
    cmd = f'exec {shlex.quote(sys.executable)} -S -E {shlex.quote(str(folder / "launcher.py"))} "$@"\n'
    (folder / "python").write_text("#!/bin/sh\n" + cmd)
    (folder / "python").chmod(0o755)
    return str(folder / "python")


def serve(path: str) -> None:
    """Import Snakemake and the step scripts' libraries, then fork one run or job per request on
    the socket `path` until the parent dies."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).parent.resolve():
        del sys.path[0]  # this script's folder: not on a `python -m snakemake` path
    import snakemake.cli  # noqa: F401 - the import each run would otherwise pay

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    launcher = _launcher(path)
    started = dict(os.environ)

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
                    request = json.loads(message)
                    if "script" in request:  # a step script's `python SCRIPT` (the launcher)
                        _job(request, fds, started)
                    else:  # a `python -m snakemake ARGS` of the tests
                        _run(request, fds, launcher)
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
    return os.environ.get("AQUAFLOW_TEST_FORK", "1") != "0" and env.get("PYTHONPATH") == pythonpath


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`python -m snakemake *args` in `cwd` with `env`, output captured as text (subprocess.run)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(os.devnull, "rb") as null,
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn,
    ):
        conn.connect(_server())
        jobs = os.environ.get("AQUAFLOW_TEST_FORK", "1") != "runs"
        request = {"args": list(args), "cwd": str(cwd), "env": env, "jobs": jobs}
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

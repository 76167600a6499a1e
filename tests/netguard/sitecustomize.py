"""Network guard for test runs: put this folder on PYTHONPATH and every Python process of the run
(Snakemake, its step scripts) records and refuses any attempt to reach the network: a DNS lookup of
a name that is not local, or a connect to an address that is not loopback or a Unix socket.
Attempts are appended to the file named by AQUAFLOW_NETGUARD_LOG (one line each, with the caller).
"""

import os
import socket
import sys
import traceback

_LOG = os.environ.get("AQUAFLOW_NETGUARD_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "", None}


def _local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in _LOCAL_NAMES:
        return True
    host = str(host)
    return host.startswith("127.") or host in ("::1", "0.0.0.0", "::") or host == socket.gethostname()


def _refuse(what: str) -> None:
    if _LOG:
        caller = "".join(traceback.format_stack(limit=8)[:-2]).replace("\n", " | ")
        with open(_LOG, "a") as fh:
            fh.write(f"pid {os.getpid()} {what} :: {caller}\n")
    raise OSError(f"network access blocked in tests: {what}")


def _hook(event, args):
    if event == "socket.getaddrinfo":
        if not _local(args[0]):
            _refuse(f"getaddrinfo {args[0]!r}")
    elif event == "socket.connect":
        sock, address = args
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse(f"connect {address!r}")
    elif event == "socket.gethostbyname" and not _local(args[0]):
        _refuse(f"gethostbyname {args[0]!r}")


sys.addaudithook(_hook)

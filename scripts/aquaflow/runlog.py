"""Logging for step scripts: everything (library logs, warnings, progress bars) into the rule log."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import TextIO


def setup(path: str | Path, level: int = logging.INFO) -> TextIO:
    """Send logging and warnings to `path`; uncaught errors go there and to stderr. Returns it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the step process
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "alembic", "matplotlib", "PIL", "filelock", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)

    def hook(kind, value, tb):
        stream.write("".join(traceback.format_exception(kind, value, tb)))
        stream.flush()
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = hook
    return stream

"""A disk that fills during a shard, for every task: a clear error, no output that looks complete, and
a rerun after space is freed that completes with nothing lost (same rows as an undisturbed run)."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from aquaflow.data import inputs
from aquaflow.engine import detect, infer

from .test_infer import tiny_model  # noqa: F401  (module fixture: a random small classifier)

FREE_BYTES = 6000  # left on the small disk: less than any shard writes


@contextlib.contextmanager
def nearly_full_disk(folder: Path) -> Iterator[None]:
    """`folder` on a 1 MiB tmpfs filled but for FREE_BYTES (root), else a file-size limit of
    FREE_BYTES on this process (writes past it fail with EFBIG, as a full disk fails with ENOSPC)."""
    folder.mkdir(parents=True)
    if os.geteuid() == 0 and shutil.which("mount"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
        try:
            filler = folder / "filler"
            with contextlib.suppress(OSError), open(filler, "wb") as fh:
                fh.write(b"\0" * (2 << 20))  # fills the disk
            os.truncate(filler, filler.stat().st_size - FREE_BYTES)
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FREE_BYTES, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def images(folder: Path, planktonclas_resources: Path, n: int = 40) -> pd.DataFrame:
    src = sorted((planktonclas_resources / "demo-images").rglob("*.jpg"))[:n]
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(src):
        shutil.copy(p, folder / f"{i:03d}.jpg")
    return inputs.from_folder(folder, [".jpg"]).assign(seq=lambda d: range(len(d)))


def classify_shard(table: pd.DataFrame, model, out: Path) -> dict:
    w, c = model
    names = {k: out / f"{k}.x" for k in ("predictions", "rejected", "summary")}
    return infer.run_shard(
        table,
        w,
        c,
        names["predictions"],
        names["rejected"],
        names["summary"],
        top_k=3,
        batch_size=8,
        workers=0,
        device="cpu",
        embeddings=True,
    )


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    """An untrained YOLO (built from its yaml, no download) saved as a given model."""
    from aquaflow.backends.yolo import ultra

    d = tmp_path_factory.mktemp("detector")
    ultra.setup(d / "ul")
    model = ultra.build({"family": "yolo11", "size": "n", "weights": None}, "detect")
    model.save(str(d / "model.pt"))
    return d / "model.pt", {"task": "detect", "classes": [str(v) for v in model.names.values()]}


def detect_shard(table: pd.DataFrame, model, out: Path) -> dict:
    weights, card = model
    settings = {
        "tiling": {"enabled": False},
        "max_pixels": 10**8,
        "pixel_size": None,
        "imgsz": 64,
        "conf": 0.001,
        "iou": 0.7,
        "max_det": 20,
    }
    outs = {k: out / f"{k}.x" for k in ("predictions", "counts", "rejected", "summary")}
    return detect.run_shard(table, weights, card, outs, settings, batch_size=8, device="cpu")


TASKS = {"classify": (classify_shard, "tiny_model"), "detect": (detect_shard, "tiny_detector")}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_full_disk_fails_clearly_leaves_nothing_and_a_rerun_completes(
    task, request, tmp_path, planktonclas_resources
):
    run, fixture = TASKS[task]
    model = request.getfixturevalue(fixture)
    table = images(tmp_path / "in", planktonclas_resources)
    reference = run(table, model, tmp_path / "reference")

    out = tmp_path / "small" / "shard"
    with nearly_full_disk(tmp_path / "small"):
        with pytest.raises(OSError) as err:
            run(table, model, out)
        assert err.value.errno in (errno.ENOSPC, errno.EFBIG), err.value
        assert str(out) in str(err.value) and "run the same command again" in str(err.value)
        left = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert left == [], f"a failed shard left {left}"  # no output, no temporary file
    # space freed (the filler is gone with the small disk): the same shard again
    again = run(table, model, out)
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in reference.items() if k != "seconds"
    }
    assert again["seen"] == again["predicted"] + again["rejected"] == len(table)
    for name in ("predictions", "rejected"):
        got = pd.read_parquet(out / f"{name}.x")
        want = pd.read_parquet(tmp_path / "reference" / f"{name}.x")
        pd.testing.assert_frame_equal(got, want)

"""Staging for jobs without a shared file system: shard bundles written, read back, and read by source."""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aquaflow.data import imaging
from aquaflow.engine import staging
from aquaflow.io import sha256_file

LOGICAL = "/campaigns/2026/data"  # where inputs.parquet says the files are
LATIN1 = b"caf\xe9.bin"  # a name that is not valid UTF-8: read through source_hex


def _png(value: int, width: int) -> bytes:
    """A small PNG (staging packs only files whose header is an image's)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((4, width, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


A, B, L = _png(10, 3), _png(200, 5), _png(90, 7)


@pytest.fixture
def campaign(tmp_path):
    """Five rows: a, b, a file that is gone, a again (a collage read twice), a Latin-1 name."""
    local = tmp_path / "copy"  # where this job has the dataset
    local.mkdir()
    (local / "a.bin").write_bytes(A)
    (local / "b.bin").write_bytes(B)
    with open(os.path.join(os.fsencode(local), LATIN1), "wb") as fh:
        fh.write(L)
    names = ["a.bin", "b.bin", "gone.bin", "a.bin", "caf\ufffd.bin"]  # the last for display only
    table = pd.DataFrame(
        {
            "source": [f"{LOGICAL}/{n}" for n in names],
            "source_hex": [""] * 4 + [(os.fsencode(LOGICAL) + b"/" + LATIN1).hex()],
            "seq": range(5),
        }
    )
    table.to_parquet(tmp_path / "inputs.parquet", index=False)
    return tmp_path, local, table


def test_stage_writes_one_bundle_per_shard_and_reads_back(campaign, caplog):
    tmp_path, local, table = campaign
    caplog.set_level(logging.INFO, logger="aquaflow.engine.staging")
    bundles = {"1-of-2": tmp_path / "staged/1-of-2.zip", "2-of-2": tmp_path / "staged/2-of-2.zip"}
    counts = staging.stage(
        tmp_path / "inputs.parquet", bundles, logical_root=LOGICAL + "/", local_root=str(local)
    )
    # shard 1: rows 0-1 (a, b); shard 2: rows 2-4 (gone, a, Latin-1): a is stored once per shard
    assert counts == {"rows": 5, "files": 4, "rejected": 1, "bytes": len(A) + len(B) + len(A) + len(L)}
    assert [r.getMessage() for r in caplog.records] == [
        "staged 1-of-2: 2 rows, 2 files, 0 rejected",
        "staged 2-of-2: 3 rows, 2 files, 1 rejected",
    ]
    digest = sha256_file(tmp_path / "inputs.parquet")
    with zipfile.ZipFile(bundles["2-of-2"]) as zf:
        assert sorted(zf.namelist()) == ["files/0000000", "files/0000001", "rows.parquet", "staged.json"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    rows, reads, sha = staging.open_bundle(bundles["2-of-2"], tmp_path / "open")
    assert sha == digest
    pd.testing.assert_frame_equal(rows, table.iloc[2:].reset_index(drop=True))
    assert isinstance(reads[0], imaging.Rejected) and reads[0].reason == imaging.MISSING
    assert "gone.bin" in reads[0].detail
    assert reads[1] == str(tmp_path / "open/files/0000000") and reads[2] == str(
        tmp_path / "open/files/0000001"
    )
    assert [Path(r).read_bytes() for r in reads[1:]] == [A, L]
    rows, reads, _ = staging.open_bundle(bundles["1-of-2"], tmp_path / "open1")
    assert list(rows["seq"]) == [0, 1] and [Path(r).read_bytes() for r in reads] == [A, B]


def test_a_collage_read_by_several_rows_is_stored_once(campaign):
    tmp_path, local, _ = campaign
    bundle = tmp_path / "all.zip"
    counts = staging.stage(
        tmp_path / "inputs.parquet", {"1-of-1": bundle}, logical_root=LOGICAL, local_root=str(local)
    )
    assert counts == {"rows": 5, "files": 3, "rejected": 1, "bytes": len(A) + len(B) + len(L)}
    _, reads, _ = staging.open_bundle(bundle, tmp_path / "o")
    assert reads[0] == reads[3] and len({reads[0], reads[1], reads[4]}) == 3


def test_without_roots_the_logical_paths_are_read_as_they_are(campaign):
    tmp_path, _, _ = campaign
    bundles = {"1-of-2": tmp_path / "x.zip", "2-of-2": tmp_path / "y.zip"}
    counts = staging.stage(tmp_path / "inputs.parquet", bundles)
    assert counts == {"rows": 5, "files": 0, "rejected": 5, "bytes": 0}  # nothing exists under LOGICAL here


def test_local_paths_replace_only_the_logical_root():
    assert staging._local("/d/data/x.png", "/d/data", "/tmp/c") == "/tmp/c/x.png"
    assert staging._local("/d/data/x.png", "/d/data/", "/tmp/c/") == "/tmp/c/x.png"
    assert staging._local(b"/d/data/\xe9.png", "/d/data", "/tmp/c") == b"/tmp/c/\xe9.png"
    assert staging._local("/d/database/x.png", "/d/data", "/tmp/c") == "/d/database/x.png"
    assert staging._local("/d/data/x.png", "", "/tmp/c") == "/d/data/x.png"
    assert staging._local("/d/data/x.png", "/d/data", "/d/data") == "/d/data/x.png"
    assert staging._local("/d/BOX/x.png", "/d/BOX", "/tmp/cX") == "/tmp/cX/x.png"  # roots ending in X


def test_shard_part_from_a_bundle_or_from_the_inputs_table(campaign):
    tmp_path, local, table = campaign
    bundle = tmp_path / "2-of-2.zip"
    staging.stage(
        tmp_path / "inputs.parquet", {"2-of-2": bundle}, logical_root=LOGICAL, local_root=str(local)
    )
    work = tmp_path / "work"
    work.mkdir()
    digest = sha256_file(tmp_path / "inputs.parquet")
    with staging.shard_part(bundle, "2-of-2", work) as (part, reads, sha):
        assert list(part["seq"]) == [2, 3, 4] and sha == digest
        assert Path(reads[1]).read_bytes() == A and Path(reads[1]).is_relative_to(work)
    assert list(work.iterdir()) == []  # unpacked files gone with the context
    with staging.shard_part(tmp_path / "inputs.parquet", "1-of-2", work) as (part, reads, sha):
        assert list(part["seq"]) == [0, 1] and reads is None and sha == digest
        pd.testing.assert_frame_equal(part, table.iloc[:2])


def test_source_reader_from_bundles_or_from_the_files(campaign):
    tmp_path, local, table = campaign
    bundles = [tmp_path / "1.zip", tmp_path / "2.zip"]
    staging.stage(
        tmp_path / "inputs.parquet",
        {"1-of-2": bundles[0], "2-of-2": bundles[1]},
        logical_root=LOGICAL,
        local_root=str(local),
    )
    read = staging.source_reader(table, bundles)
    assert read(f"{LOGICAL}/b.bin") == B and read(f"{LOGICAL}/a.bin") == A
    assert read(table["source"].iloc[4]) == L
    with pytest.raises(imaging.Rejected, match="in no staged bundle") as err:
        read(f"{LOGICAL}/gone.bin")
    assert err.value.reason == imaging.MISSING
    # no bundles: the files themselves, the Latin-1 one by its exact bytes
    here = table.assign(
        source=[str(local / "a.bin"), str(local / "b.bin"), "x", "y", "not/this/name"],
        source_hex=[""] * 4 + [os.path.join(os.fsencode(local), LATIN1).hex()],
    )
    read = staging.source_reader(here)
    assert read(str(local / "b.bin")) == B and read("not/this/name") == L
    assert staging.source_reader(here.drop(columns="source_hex"))(str(local / "a.bin")) == A

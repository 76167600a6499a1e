"""Fault injection: a folder, a manifest and a FlowCam run holding every bad input we know of.

Each input goes through the library engine (aquaflow.data.inputs.build + aquaflow.engine.infer.run_shard) with
a tiny model. For every file the outcome is asserted (predicted, rejected with which reason, or
skipped by the listing with which reason), and predicted + rejected + skipped = files in the folder.

The engine runs in a subprocess without privileges, so that a file without read permission is
really unreadable: run as root (CI), the subprocess gives up every capability before it reads
anything (root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH is held to the permission bits like
any user). It keeps uid 0, so it still reads a checkout and a venv under a folder only root may
enter (e.g. a clone in /root), which a switch to another uid could not.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from aquaflow.backends import torch_model as models
from aquaflow.data import imaging, inputs
from aquaflow.io import write_json
from aquaflow.synthetic.flowcam import write_run

REPO = Path(__file__).resolve().parents[2]
PREDICTED = "predicted"
LATIN1 = b"caf\xe9_\xb5m.jpg"  # "café_µm.jpg" as a Latin-1 instrument PC writes it: not UTF-8


def skipped(why: str) -> str:
    return f"skipped:{why}"


def _rgb(h: int = 48, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 225, np.uint8)
    cv2.ellipse(img, (w // 2, h // 2), (w // 3, h // 3), 30.0, 0, 360, (60, 90, 110), -1)
    return np.clip(img.astype(int) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)


def tiff_bomb(path: Path, side: int = 20000) -> None:
    """A float RGB TIFF (Pillow cannot read it: OpenCV's turn) whose header claims side x side px."""
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.float32), photometric="rgb")
    with tifffile.TiffFile(path) as tf:
        tags = tf.pages.first.tags
        offsets = [tags[name].valueoffset for name in ("ImageWidth", "ImageLength", "RowsPerStrip")]
    with open(path, "r+b") as fh:
        for off in offsets:
            fh.seek(off)
            fh.write(struct.pack("<I", side))


def build_folder(root: Path) -> dict[bytes, str]:
    """Write one file per class; return {path relative to root (bytes): expected outcome}."""
    root.mkdir(parents=True)
    rgb = _rgb()
    expect: dict[bytes, str] = {}

    def put(name: str | bytes, outcome: str) -> Path | bytes:
        rel = os.fsencode(name)
        expect[rel] = outcome
        return root / name if isinstance(name, str) else os.fsencode(root) + b"/" + rel

    Image.fromarray(rgb).save(put("good.jpg", PREDICTED), quality=90)
    Image.fromarray(rgb).save(put("UPPER_CASE.JPG", PREDICTED), quality=90)  # old instrument PCs
    Image.fromarray(rgb).save(put("png_inside.jpg", PREDICTED), format="PNG")  # wrong extension
    Image.fromarray(rgb[:, :, 0]).save(put("gray.png", PREDICTED))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(put("rgba.png", PREDICTED))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(put("palette.gif", PREDICTED))
    Image.fromarray(rgb).convert("CMYK").save(put("cmyk.jpg", PREDICTED))  # print-world scanners
    tifffile.imwrite(put("camera16.tif", PREDICTED), rgb[:, :, 0].astype(np.uint16) * 257)
    tifffile.imwrite(put("float_rgb.tif", PREDICTED), rgb.astype(np.float32) / 255, photometric="rgb")
    Image.new("RGB", (1, 1), (90, 90, 90)).save(put("one_pixel.png", PREDICTED))
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held upright: rotate 90° clockwise to view
    Image.fromarray(rgb).save(put("exif_rotated.jpg", PREDICTED), exif=exif)
    with open(put(LATIN1, PREDICTED), "wb") as fh:
        fh.write((root / "good.jpg").read_bytes())
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rgb).save(put("sub/deeper/nested.png", PREDICTED))
    os.symlink(root / "good.jpg", put("link_to_good.jpg", PREDICTED))

    put("empty.jpg", imaging.ZERO_BYTES).write_bytes(b"")
    jpeg = (root / "good.jpg").read_bytes()
    put("truncated.jpg", imaging.TRUNCATED).write_bytes(jpeg[: len(jpeg) // 2])
    put("html_error_page.png", imaging.NOT_AN_IMAGE).write_text("<html>502 Bad Gateway</html>\n")
    Image.new("1", (15000, 15000)).save(put("bomb.png", imaging.TOO_LARGE))  # 225 MP in a few kB
    tiff_bomb(put("bomb_float.tif", imaging.TOO_LARGE))  # 400 MP claimed, OpenCV path
    tifffile.imwrite(
        put("int32.tif", imaging.UNSUPPORTED_MODE), rgb.astype(np.int32) * 1000, photometric="rgb"
    )
    os.symlink(root / "was_moved.jpg", put("dangling_link.jpg", imaging.BROKEN_LINK))
    locked = put("no_permission.jpg", imaging.UNREADABLE)
    locked.write_bytes(jpeg)
    locked.chmod(0)
    Image.fromarray(rgb).save(put("vanishes_after_listing.jpg", imaging.MISSING))

    os.mkfifo(put("named_pipe.jpg", skipped("not_a_regular_file")))  # reading it would block
    put("notes.txt", skipped("extension")).write_text("sample notes\n")
    put("run_0001.lst", skipped("extension")).write_text("017\n")
    put("Thumbs.db", skipped("extension")).write_bytes(b"\0" * 64)
    put(".DS_Store", skipped("hidden")).write_bytes(b"\0" * 64)
    put("._good.jpg", skipped("hidden")).write_bytes(b"\0\x05\x16\x07" + b"\0" * 60)  # AppleDouble
    return expect


def build_flowcam(folder: Path) -> dict[int, str]:
    """A FlowCam run with broken rows; return {particle_id: expected outcome}."""
    truth = write_run(folder, n_particles=10, per_collage=4)
    expect = {t["particle_id"]: PREDICTED for t in truth}
    lst = folder / "run.lst"
    lines = lst.read_text().splitlines()
    head, rows = lines[:13], [r.split("|") for r in lines[13:]]
    # fields: id area esd timestamp collage x y w h src_x src_y
    rows[0][7] = "0"  # zero-width box
    expect[1] = imaging.BAD_CROP_BOX
    rows[1][5:9] = ["", "", "", ""]  # crop box missing
    expect[2] = imaging.BAD_CROP_BOX
    rows[2][5] = "395"  # box runs off the 400 px collage
    expect[3] = imaging.BAD_CROP_BOX
    rows[3][4] = ""  # no collage named
    expect[4] = imaging.BAD_FILE_NAME
    # second collage renamed to a Latin-1 name; the .lst (Latin-1) names it the same way
    os.rename(folder / "run_000002.tif", os.fsencode(folder) + b"/run_\xe9t\xe9.tif")
    for r in rows:
        if r[4] == "run_000002.tif":
            r[4] = "run_\xe9t\xe9.tif"
    (folder / "run_000003.tif").unlink()  # a collage lost in a copy
    for r in rows:
        if r[4] == "run_000003.tif" and expect[int(r[0])] == PREDICTED:
            expect[int(r[0])] = imaging.MISSING
    lst.write_bytes(("\n".join(head + ["|".join(r) for r in rows]) + "\n").encode("latin-1"))
    return expect


def drop_all_capabilities() -> None:
    """Give up every capability of this thread (and of anything it starts or executes): from here
    on, uid 0 is held to the files' permission bits like any user; mode 000 means unreadable.
    Self-contained: its source is the first thing the engine's subprocess runs (see faults)."""
    import ctypes

    caps_v3, pr_capbset_drop = 0x20080522, 24  # _LINUX_CAPABILITY_VERSION_3, from linux/prctl.h

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        last_cap = int(fh.read())
    for cap in range(last_cap + 1):  # the bounding set: an exec'd program cannot get them back
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")
    if libc.capset(ctypes.byref(Header(caps_v3, 0)), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def engine(base: str) -> None:
    """The run under test (in a subprocess): list inputs, drop one file, predict one shard, gather.

    Started as root (CI), the subprocess gave up every capability before its first import
    (drop_all_capabilities): a file without read permission is unreadable, as for any user.
    """
    # capset acts on one thread: no thread of this process (torch's included) may have any left
    for task in Path("/proc/self/task").iterdir():
        status = (task / "status").read_text()
        assert "CapEff:\t0000000000000000" in status, status

    from aquaflow.engine import gather, infer

    base_path = Path(base)
    spec = json.loads((base_path / "spec.json").read_text())
    table = inputs.build(spec["inputs"], base_path)
    inputs.write(table, base_path / "out" / "inputs.parquet")
    os.unlink(spec["vanish"])  # gone between listing and decoding (a live share)
    out = base_path / "out"
    infer.run_shard(
        table,
        spec["weights"],
        spec["card"],
        out / "shard.parquet",
        out / "rejected_shard.parquet",
        out / "shard.json",
        top_k=2,
        batch_size=8,
        workers=0,
        device="cpu",
        backend="eager",
    )
    merged = {
        k: out / f for k, f in [("predictions", "predictions.parquet"), ("rejected", "rejected.parquet")]
    }
    merged |= {"dataset": out / "dataset", "summary": out / "summary.json", "table": out / "summary.tsv"}
    gather.run(
        predictions=[out / "shard.parquet"],
        rejected=[out / "rejected_shard.parquet"],
        summaries=[out / "shard.json"],
        out=merged,
        inputs=out / "inputs.parquet",
    )
    print((out / "summary.json").read_text().replace("\n", " "))


@pytest.fixture(scope="module")
def faults():
    """Build every input, run the engine unprivileged; yield what it wrote and what was expected."""
    base = Path(tempfile.mkdtemp(prefix="aquaflow-faults-"))
    base.chmod(0o755)
    try:
        folder = base / "folder"
        expect = build_folder(folder)
        files_in_folder = sum(len(dirs_files[2]) for dirs_files in os.walk(folder))
        files_in_folder += sum(
            1 for d, subdirs, _ in os.walk(folder) for s in subdirs if os.path.islink(os.path.join(d, s))
        )
        flow = build_flowcam(base / "flowcam")
        manifest = base / "list.csv"  # Latin-1, as exported by an old instrument PC
        manifest.write_bytes(
            b"path,station\n" + b"folder/" + LATIN1 + b",A\n" + b",B\n" + b"folder/never_written.jpg,C\n"
        )
        manifest_expect = {"A": PREDICTED, "B": imaging.BAD_FILE_NAME, "C": imaging.MISSING}

        import timm
        import torch

        torch.manual_seed(0)
        net = timm.create_model("test_efficientnet", num_classes=3)
        (base / "model").mkdir()
        models.save_weights(net, base / "model" / "w.safetensors")
        card = {
            "arch": "test_efficientnet",
            "classes": ["a", "b", "c"],
            "input_size": 32,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        }
        write_json(card, base / "model" / "card.json")
        for f in (base / "model").iterdir():
            f.chmod(0o644)
        exts = list(imaging.IMAGE_EXTENSIONS)
        spec = {
            "inputs": [
                {"kind": "folder", "path": str(folder), "extensions": exts},
                {"kind": "manifest", "path": str(manifest), "column": "path"},
                {"kind": "flowcam", "path": str(base / "flowcam")},
            ],
            "weights": str(base / "model" / "w.safetensors"),
            "card": str(base / "model" / "card.json"),
            "vanish": str(folder / "vanishes_after_listing.jpg"),
        }
        (base / "spec.json").write_text(json.dumps(spec))
        (base / "out").mkdir()
        (base / "home").mkdir()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(base / "home"),
            "PYTHONPATH": f"{REPO / 'scripts'}{os.pathsep}{REPO}",
        }
        code = f"from tests.unit.test_fault_injection import engine; engine({str(base)!r})"
        if os.geteuid() == 0:  # before any import starts a thread: see drop_all_capabilities
            code = f"{inspect.getsource(drop_all_capabilities)}\ndrop_all_capabilities()\n{code}"
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=base, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = base / "out"
        yield {
            "base": base,
            "folder": folder,
            "expect": expect,
            "files_in_folder": files_in_folder,
            "flowcam": flow,
            "manifest": manifest_expect,
            "summary": json.loads(proc.stdout.strip().splitlines()[-1]),
            "table": pd.read_parquet(out / "inputs.parquet"),
            "pred": pd.read_parquet(out / "predictions.parquet"),
            "rej": pd.read_parquet(out / "rejected.parquet"),
            "skipped": inputs.read_skipped(out / "inputs.parquet"),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


def outcomes(f) -> dict[int, str]:
    """seq -> predicted | rejection reason, from the engine's two output tables."""
    got = dict.fromkeys(f["pred"]["seq"], PREDICTED)
    got.update(zip(f["rej"]["seq"], f["rej"]["reason"], strict=True))
    return got


def test_every_class_and_outcome_is_covered(faults):
    cases = len(faults["expect"]) + len(faults["flowcam"]) + len(faults["manifest"])
    assert cases >= 40
    outcomes_expected = (
        set(faults["expect"].values()) | set(faults["flowcam"].values()) | set(faults["manifest"].values())
    )
    assert outcomes_expected == {
        PREDICTED,
        # extreme_aspect needs a center_crop model card (tests/unit/test_limits.py), not this letterbox one
        *(r for r in imaging.REASONS if r not in (imaging.DECODE_ERROR, imaging.EXTREME_ASPECT)),
        skipped("extension"),
        skipped("hidden"),
        skipped("not_a_regular_file"),
    }


def test_every_folder_file_has_its_outcome(faults):
    folder = os.fsencode(faults["folder"])
    table = faults["table"]
    got = outcomes(faults)
    paths = inputs.source_paths(table)
    seen = {}
    from_folder = (table["station"].isna() & table["particle_id"].isna()).tolist()
    for seq, path, mine in zip(table["seq"], paths, from_folder, strict=True):
        if mine:
            seen[os.fsencode(path)[len(folder) + 1 :]] = got[seq]
    for f in faults["skipped"]["files"]:
        rel = os.fsencode(f["path"])[len(folder) + 1 :]
        seen[rel] = skipped(f["reason"])
    wrong = {k: (v, seen.get(k)) for k, v in faults["expect"].items() if seen.get(k) != v}
    assert not wrong, wrong  # {file: (expected, got)}


def test_predicted_plus_rejected_plus_skipped_is_every_file(faults):
    table = faults["table"]
    from_folder = table["station"].isna() & table["particle_id"].isna()  # not the manifest or FlowCam
    seqs = set(table.loc[from_folder, "seq"])
    predicted = int(faults["pred"]["seq"].isin(seqs).sum())
    rejected = int(faults["rej"]["seq"].isin(seqs).sum())
    n_skipped = sum(faults["skipped"]["counts"].values())
    assert predicted + rejected + n_skipped == faults["files_in_folder"] == len(faults["expect"])
    s = faults["summary"]
    assert s["seen"] == len(faults["table"]) == s["predicted"] + s["rejected"]
    assert faults["skipped"]["counts"] == {"extension": 3, "hidden": 2, "not_a_regular_file": 1}
    # the campaign summary (gather) reports them too, with the files' names
    assert s["skipped"] == n_skipped and s["skipped_by_reason"] == faults["skipped"]["counts"]
    assert sorted(f["path"] for f in s["skipped_files"]) == sorted(
        f["path"] for f in faults["skipped"]["files"]
    )


def test_non_utf8_name_is_predicted_and_recoverable(faults):
    pred = faults["pred"]
    assert "source_hex" in pred.columns
    row = pred[pred["source_hex"] != ""]
    raw = {bytes.fromhex(h) for h in row["source_hex"]}
    folder = os.fsencode(faults["folder"])
    assert folder + b"/" + LATIN1 in raw  # the exact bytes on disk, from the folder listing
    assert any(r.endswith(b"/run_\xe9t\xe9.tif") for r in raw)  # from the FlowCam list
    for shown in row["source"]:
        assert shown.isprintable() and "\\xe9" in shown  # readable text, valid UTF-8


def test_manifest_rows(faults):
    got = outcomes(faults)
    table = faults["table"]
    rows = table[table["station"].notna()] if "station" in table else table.iloc[:0]
    assert {st: got[seq] for st, seq in zip(rows["station"], rows["seq"], strict=True)} == faults["manifest"]


def test_flowcam_rows(faults):
    got = outcomes(faults)
    table = faults["table"]
    rows = table[table["particle_id"].notna()]
    result = {int(p): got[seq] for p, seq in zip(rows["particle_id"], rows["seq"], strict=True)}
    assert result == faults["flowcam"]
    # a bad box never falls back to predicting the whole collage
    pred = faults["pred"].dropna(subset=["particle_id"])
    assert (pred["crop_w"] > 0).all() and (pred["crop_x"] >= 0).all()


def test_unreadable_file_is_rejected_for_a_normal_user(faults):
    """The engine ran unprivileged: the no-permission file is rejected, not predicted."""
    assert faults["expect"][b"no_permission.jpg"] == imaging.UNREADABLE
    st = os.stat(faults["folder"] / "no_permission.jpg")
    assert stat.S_IMODE(st.st_mode) == 0

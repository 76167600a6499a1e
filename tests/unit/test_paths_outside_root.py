"""Paths read from data stay under their root: FlowCam lists, manifests, folder links, EcoTaxa
TSVs, YOLO and COCO datasets, fetched folders; staging packs nothing from outside, nor a non-image."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aquaflow.data import dataset, fetch, imaging, inputs, roots
from aquaflow.engine import shards, staging
from aquaflow.tasks.detect import formats

SECRET = b"aws_secret_access_key = hunter2-do-not-ship"


def png(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def elsewhere(tmp_path):
    """Files outside every root: a credentials file and a readable image."""
    out = tmp_path / "elsewhere"
    out.mkdir()
    (out / "credentials").write_bytes(SECRET)
    png(out / "photo.png", 77, (13, 11))
    return out


def outcomes(table: pd.DataFrame, read_paths: list | None = None) -> dict[int, str]:
    """seq -> 'decoded' | rejection reason, through the shard engine's decoding."""
    got: dict[int, str] = {}
    seqs = table["seq"].tolist()
    for batch in shards.batches(
        table, size=16, resize="letterbox", max_pixels=10**7, batch_size=4, read_paths=read_paths
    ):
        got.update({seqs[i]: "decoded" for i in batch["index"]})
        got.update({seqs[i]: reason for i, reason, _ in batch["rejected"]})
    return got


def test_a_manifest_naming_files_outside_its_root_stages_nothing_from_outside(tmp_path, elsewhere):
    camp = tmp_path / "campaign"
    png(camp / "good.png", 10)
    (camp / "notes.png").write_bytes(SECRET.replace(b"hunter2", b"inside-root"))  # not an image
    os.symlink(elsewhere / "photo.png", camp / "link.png")
    pd.DataFrame(
        {
            "path": [
                "good.png",
                str(elsewhere / "credentials"),  # absolute
                "../elsewhere/photo.png",  # '..'
                "link.png",  # a link leaving the folder
                "notes.png",
            ],
            "station": list("ABCDE"),
        }
    ).to_csv(camp / "list.csv", index=False)
    spec = [{"kind": "manifest", "path": str(camp / "list.csv"), "column": "path"}]
    table = inputs.build(spec, None)
    inputs.write(table, tmp_path / "inputs.parquet")
    want = {0: "decoded", 1: "outside_root", 2: "outside_root", 3: "outside_root", 4: "not_an_image"}
    # with a shared file system: the shard engine never opens them
    assert outcomes(table) == want
    assert inputs.metadata_columns(table)[0] == ["station"]  # the flag is no prediction column
    # without one: the bundle holds the one image, nothing from outside, not the text file
    bundle = tmp_path / "staged" / "1-of-1.zip"
    counts = staging.stage(tmp_path / "inputs.parquet", {"1-of-1": bundle})
    assert counts["files"] == 1 and counts["rejected"] == 4 and counts["rows"] == 5
    raw = bundle.read_bytes()
    assert b"hunter2" not in raw and b"inside-root" not in raw
    assert (elsewhere / "photo.png").read_bytes() not in raw
    with zipfile.ZipFile(bundle) as zf:
        index = json.loads(zf.read(staging.INDEX))
    assert {k: v[0] for k, v in index["rejected"].items()} == {
        "1": "outside_root",
        "2": "outside_root",
        "3": "outside_root",
        "4": "not_an_image",
    }
    assert "allow_paths_outside_root" in index["rejected"]["1"][1]
    with staging.shard_part(bundle, "1-of-1", tmp_path) as (part, reads, _):
        assert outcomes(part, reads) == want  # the same reasons, counts reconcile (5 = 1 + 4)
    # the named opt-out: read as given; staging still packs only images
    table = inputs.build(spec, None, allow_outside_root=True)
    assert roots.OUTSIDE_ROOT not in table.columns
    assert outcomes(table) == {0: "decoded", 1: "not_an_image", 2: "decoded", 3: "decoded", 4: "not_an_image"}
    inputs.write(table, tmp_path / "inputs.parquet")
    counts = staging.stage(tmp_path / "inputs.parquet", {"1-of-1": bundle})
    assert counts["files"] == 3 and counts["rejected"] == 2 and b"hunter2" not in bundle.read_bytes()


def test_flowcam_collages_and_folder_links_outside_their_root_are_rejected(tmp_path, elsewhere):
    from aquaflow.synthetic.flowcam import write_run

    run = tmp_path / "run"
    write_run(run, n_particles=4, per_collage=2)
    collages = sorted(p.name for p in run.glob("*.tif"))
    (elsewhere / "stolen.tif").write_bytes((run / collages[1]).read_bytes())
    lst = next(run.glob("*.lst"))
    text = lst.read_text(encoding="latin-1")
    lst.write_text(text.replace(f"|{collages[1]}|", f"|{elsewhere / 'stolen.tif'}|"), encoding="latin-1")
    folder = tmp_path / "folder"
    png(folder / "a.png", 5)
    os.symlink(folder / "a.png", folder / "inside_link.png")
    os.symlink(elsewhere / "photo.png", folder / "outside_link.png")
    specs = [
        {"kind": "flowcam", "path": str(run)},
        {"kind": "folder", "path": str(folder), "extensions": [".png"]},
    ]
    table = inputs.build(specs, None)
    assert table[roots.OUTSIDE_ROOT].tolist() == [False, False, True, True, False, False, True]
    got = outcomes(table)
    assert [got[s] for s in range(7)] == ["decoded"] * 2 + ["outside_root"] * 2 + ["decoded"] * 2 + [
        "outside_root"
    ]
    assert outcomes(inputs.build(specs, None, allow_outside_root=True)) == dict.fromkeys(range(7), "decoded")


def test_a_link_in_a_folder_under_the_root_through_dotdot_is_resolved_as_open_would(tmp_path, elsewhere):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(elsewhere, root / "away")  # root/away/../x is elsewhere/../x for open(), not root/x
    check = roots.Root(root)
    assert not check.contains(root / "away" / "photo.png")
    assert not check.contains(str(root / "away" / ".." / "elsewhere" / "credentials"))
    assert check.contains(root / "sub" / ".." / "x.png") and check.contains(b"")
    with pytest.raises(imaging.Rejected) as err:
        check.check(root / "away" / "credentials")
    assert err.value.reason == roots.OUTSIDE_ROOT


def test_ecotaxa_img_file_name_and_class_folder_links_outside_the_dataset_are_rejected(tmp_path, elsewhere):
    images = tmp_path / "raw" / "images"
    for i in range(3):
        png(images / f"a{i}.png", 20 + i)
    rows = ["img_file_name\tobject_annotation_category", "[t]\t[t]"]
    rows += [f"a{i}.png\tcopepod" for i in range(3)]
    rows += [f"{elsewhere / 'photo.png'}\tcopepod", "../../elsewhere/photo.png\tcopepod"]
    (images / "ecotaxa_x.tsv").write_text("\n".join(rows) + "\n")
    spec = {"layout": "ecotaxa", "images": "images", "extensions": [".png"]}
    spec["split"] = {"val": 0.0, "test": 0.0, "seed": 0}
    manifest, rejected, _ = dataset.build_manifest(tmp_path / "raw", spec)
    assert len(manifest) == 3 and rejected["reason"].tolist() == ["outside_root", "outside_root"]
    assert len(manifest) + len(rejected) == 5  # nothing lost
    manifest, rejected, _ = dataset.build_manifest(tmp_path / "raw", spec, allow_outside_root=True)
    assert len(manifest) == 4 and rejected["reason"].tolist() == ["duplicate"]  # the same photo twice
    # class folders: a link leaving the dataset
    classes = tmp_path / "cls"
    png(classes / "copepod" / "c.png", 30)
    os.symlink(elsewhere / "photo.png", classes / "copepod" / "link.png")
    spec = {"layout": "folders", "images": ".", "extensions": [".png"], "split": spec["split"]}
    manifest, rejected, _ = dataset.build_manifest(classes, spec)
    assert manifest["path"].tolist() == ["copepod/c.png"]
    assert rejected[["path", "reason"]].values.tolist() == [["copepod/link.png", "outside_root"]]


def _yolo(root: Path, **data) -> Path:
    png(root / "images" / "train" / "t.png", 40, (32, 32))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "t.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(json.dumps({"names": ["x"], "train": "images/train", **data}))
    return root


def test_yolo_and_coco_paths_outside_the_dataset_are_refused_with_the_reason(tmp_path, elsewhere):
    png(elsewhere / "images" / "val" / "v.png", 50, (32, 32))
    (elsewhere / "labels" / "val").mkdir(parents=True)
    (elsewhere / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    raw = tmp_path / "raw"
    spec = {"format": "yolo", "yaml": "data.yaml"}
    _yolo(raw, val=str(elsewhere / "images" / "val"))  # a split folder outside
    with pytest.raises(formats.LabelError, match=r"outside_root.*allow_paths_outside_root"):
        formats.read_dataset(raw, spec, "detect")
    ds = formats.read_dataset(raw, spec, "detect", allow_outside_root=True)
    assert [p.name for p in ds.splits["val"].images] == ["v.png"]
    (raw / "val.txt").write_text(f"images/train/t.png\n{elsewhere / 'images' / 'val' / 'v.png'}\n")
    (raw / "data.yaml").write_text(json.dumps({"names": ["x"], "train": "images/train", "val": "val.txt"}))
    with pytest.raises(formats.LabelError, match="outside_root"):  # a line of a split list
        formats.read_dataset(raw, spec, "detect")
    (raw / "data.yaml").write_text(
        json.dumps({"names": ["x"], "path": "../elsewhere", "train": "images/val"})
    )
    with pytest.raises(formats.LabelError, match=r"'path'.*outside_root"):
        formats.read_dataset(raw, spec, "detect")
    coco = {
        "images": [{"id": 1, "file_name": "../elsewhere/photo.png", "width": 13, "height": 11}],
        "annotations": [],
        "categories": [{"id": 1, "name": "x"}],
    }
    (raw / "c.json").write_text(json.dumps(coco))
    cspec = {
        "format": "coco",
        "coco": {s: {"annotations": "c.json", "images": "."} for s in ("train", "val")},
    }
    with pytest.raises(formats.LabelError, match="outside_root"):
        formats.read_dataset(raw, cspec, "detect")


def test_fetching_a_folder_does_not_follow_a_link_out_of_it(tmp_path, elsewhere):
    src = tmp_path / "share"
    png(src / "copepod" / "c.png", 30)
    os.symlink(elsewhere / "credentials", src / "copepod" / "creds.png")
    fetch.fetch({"kind": "path", "path": str(src)}, tmp_path / "raw", tmp_path / "cache")
    copied = tmp_path / "raw" / "copepod" / "creds.png"
    assert copied.is_symlink()  # not a copy of the secret's bytes
    assert not any(
        SECRET in p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file() and not p.is_symlink()
    )
    split = {"val": 0.0, "test": 0.0, "seed": 0}
    spec = {"layout": "folders", "images": ".", "extensions": [".png"], "split": split}
    _, rejected, _ = dataset.build_manifest(tmp_path / "raw", spec)
    assert rejected["reason"].tolist() == ["outside_root"]


@pytest.mark.parametrize("opt_out", [False, True])
def test_preprocess_reads_no_image_or_label_file_outside_the_fetched_folder(tmp_path, elsewhere, opt_out):
    """rule preprocess: an image linked from outside the fetched folder is rejected as outside_root
    unopened, an image whose label file (as its blank or flat scan would) resolves outside is
    rejected with the same reason; the others are processed. allow_paths_outside_root reads all."""
    from aquaflow.preprocess import pipeline
    from aquaflow.synthetic import litter

    raw = tmp_path / "raw"
    litter.write_dataset(raw, n_images=2, rows=2, cols=2)
    (elsewhere / "drone01.jpg").write_bytes((raw / "images/drone01.jpg").read_bytes())
    (raw / "images/drone99.jpg").symlink_to(elsewhere / "drone01.jpg")
    (raw / "truth/drone99_tiles.csv").write_bytes((raw / "truth/drone01_tiles.csv").read_bytes())
    (elsewhere / "drone02_tiles.csv").write_bytes((raw / "truth/drone02_tiles.csv").read_bytes())
    (raw / "truth/drone02_tiles.csv").unlink()
    (raw / "truth/drone02_tiles.csv").symlink_to(elsewhere / "drone02_tiles.csv")
    cfg = {
        "steps": ["patchify"],
        "images": "**/images/*.jpg",
        "patchify": {"tile": 128, "overlap": 0, "pad_mode": "reflect"},
        "labels": {"kind": "tiles", "path": "**/truth/{stem}_tiles.csv"},
        "preview_side": 64,
    } | ({roots.OPT_OUT: True} if opt_out else {})
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    steps = pipeline.run(raw, cfg, tmp_path / "out", figs)
    items = pd.read_parquet(tmp_path / "out/items.parquet")
    rejected = pd.read_parquet(tmp_path / "out/rejected.parquet")
    if opt_out:
        assert rejected.empty and sorted(set(items["image"])) == ["drone01", "drone02", "drone99"]
        assert len(items) == 12 and items["path"].str.startswith("train/").all()
        return
    assert steps["items_in"].tolist() == [2] and sorted(set(items["image"])) == ["drone01"]
    assert len(items) == 4 and items["path"].str.startswith("train/").all()
    assert rejected.set_index("path")["reason"].to_dict() == {
        "images/drone99.jpg": roots.OUTSIDE_ROOT,
        "images/drone02.jpg": roots.OUTSIDE_ROOT,
    }
    assert str(elsewhere) not in " ".join(rejected["detail"])  # the ledger names no local path
    assert "allow_paths_outside_root" in rejected["detail"].iloc[0]

import pandas as pd
import pytest
from PIL import Image

from aquaflow.data import dataset

FLOWCAM = {
    "layout": "class_folders",
    "images": "demo-images",
    "extensions": [".jpg"],
    "classes_file": "dataset_files/classes.txt",
    "splits": {
        "train": "dataset_files/train.txt",
        "val": "dataset_files/val.txt",
        "test": "dataset_files/test.txt",
    },
}


def test_flowcam_demo_manifest_uses_given_splits(planktonclas_resources):
    manifest, rejected, classes = dataset.build_manifest(planktonclas_resources, FLOWCAM)
    assert list(manifest.columns) == dataset.MANIFEST_COLUMNS
    assert len(manifest) == 105 and rejected.empty
    assert manifest["split"].value_counts().to_dict() == {"train": 82, "val": 15, "test": 8}
    assert classes == [
        "Actinoptychus",
        "Bacillariophyceae",
        "Ciliophora",
        "Dinoflagellata",
        "Noctilucales",
        "Tripos",
    ]
    assert manifest["id"].is_unique and (manifest["id"].str.len() == 16).all()
    assert (manifest["sha256"].str[:16] == manifest["id"]).all()
    assert (manifest["width"] > 0).all() and (manifest["height"] > 0).all()
    # the label is the class folder
    assert (manifest["path"].str.split("/").str[0] == manifest["label"]).all()


def test_ids_are_content_hashes_and_stable(planktonclas_resources, tmp_path):
    first, _, _ = dataset.build_manifest(planktonclas_resources, FLOWCAM)
    again, _, _ = dataset.build_manifest(planktonclas_resources, FLOWCAM)
    pd.testing.assert_frame_equal(first, again)


def write_class_folders(root, per_class):
    for label, n in per_class.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (20 + i, 30), (i * 7 % 255, ord(label[0]), 100)).save(root / label / f"{i}.png")


def test_seeded_stratified_split_and_rejections(tmp_path):
    write_class_folders(tmp_path, {"a": 20, "b": 10, "c": 3})
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "b" / "copy.png").write_bytes((tmp_path / "b" / "0.png").read_bytes())
    cfg = {"layout": "class_folders", "extensions": [".png"], "split": {"seed": 1, "val": 0.2, "test": 0.2}}
    manifest, rejected, classes = dataset.build_manifest(tmp_path, cfg)
    assert classes == ["a", "b", "c"]
    assert len(manifest) == 33
    counts = manifest.groupby(["label", "split"]).size().unstack(fill_value=0)
    assert counts.loc["a"].to_dict() == {"test": 4, "train": 12, "val": 4}
    assert (counts.loc["c"] == 1).all()  # 3 images: one per split
    assert sorted(rejected["reason"]) == ["duplicate", "not_an_image"]
    again, _, _ = dataset.build_manifest(tmp_path, cfg)
    pd.testing.assert_frame_equal(manifest, again)
    other, _, _ = dataset.build_manifest(tmp_path, {**cfg, "split": {**cfg["split"], "seed": 2}})
    by_path = manifest.set_index("path")["split"].sort_index()
    assert not other.set_index("path")["split"].sort_index().equals(by_path)


def test_ecotaxa_layout(tmp_path):
    write_class_folders(tmp_path / "imgs", {"x": 2, "y": 2})
    rows = ["img_file_name\tobject_id\tobject_annotation_category", "[t]\t[t]\t[t]"]
    for label in ("x", "y"):
        for i in range(2):
            rows.append(f"imgs/{label}/{i}.png\t{label}{i}\tCalanoida<{label}")
    (tmp_path / "ecotaxa_export.tsv").write_text("\n".join(rows) + "\n")
    cfg = {"layout": "ecotaxa", "extensions": [".png"], "split": {"seed": 0, "val": 0, "test": 0}}
    manifest, rejected, classes = dataset.build_manifest(tmp_path, cfg)
    assert classes == ["Calanoida<x", "Calanoida<y"]
    assert len(manifest) == 4 and rejected.empty
    assert set(manifest["split"]) == {"train"}


def test_labels_outside_configured_classes_fail(tmp_path):
    write_class_folders(tmp_path, {"a": 2, "b": 2})
    cfg = {
        "layout": "class_folders",
        "extensions": [".png"],
        "classes": ["a"],
        "split": {"seed": 0, "val": 0, "test": 0},
    }
    with pytest.raises(ValueError, match="not in the configured classes"):
        dataset.build_manifest(tmp_path, cfg)


def test_list_images_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for p in ("b/deep/2.JPG", "a.png", "b/1.tif", "skip.txt", ".hidden.png"):
        (tmp_path / p).write_bytes(b"x")
    assert dataset.list_images(tmp_path, (".jpg", ".png", ".tif")) == ["a.png", "b/1.tif", "b/deep/2.JPG"]

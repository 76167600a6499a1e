"""Detection datasets: YOLO and COCO read, validated with errors naming file and line, converted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from aquaflow.synthetic import scenes
from aquaflow.tasks.detect import formats


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return {k: scenes.write_dataset(k, root / k, 4, 2, (96, 128), seed=1) for k in scenes.KINDS}


@pytest.mark.parametrize("kind", sorted(scenes.KINDS))
def test_synthetic_yolo_datasets_read_back(datasets, kind):
    task, names = scenes.KINDS[kind]
    ds = formats.read_yolo(datasets[kind], task)
    assert ds.names == list(names)
    assert [len(ds.splits[s].images) for s in ("train", "val")] == [4, 2]
    labels = [lab for ls in ds.splits["train"].labels for lab in ls]
    assert labels, "scenes have objects"
    want = {"detect": "box", "segment": "polygon", "obb": "obb"}[task]
    assert {lab.kind for lab in labels} == {want}
    for lab in labels:
        x0, y0, x1, y1 = lab.xyxy()
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def _one_image_dataset(tmp_path, rows: str, task="detect"):
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "labels/train").mkdir(parents=True)
    import cv2

    for split in ("train",):
        cv2.imwrite(str(tmp_path / f"images/{split}/a.png"), np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "labels/train/a.txt").write_text(rows)
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump({"names": ["x", "y"], "train": "images/train", "val": "images/train"})
    )
    return tmp_path / "data.yaml"


@pytest.mark.parametrize(
    ("rows", "task", "message"),
    [
        ("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.1 0.1\n", "detect", "a.txt:2: class id 2 unknown"),
        ("0 0.5 1.4 0.2 0.2\n", "detect", "a.txt:1: coordinate 1.4 outside [0, 1]"),
        ("0 0.5 0.5 0.2\n", "detect", "a.txt:1: detect rows are"),
        ("\n\n0 0.1 0.1 0.2 0.1 0.2 0.2\n", "obb", "a.txt:3: obb rows are"),
        ("1.5 0.5 0.5 0.2 0.2\n", "detect", "a.txt:1: class id '1.5' is not an integer"),
        ("0 0.5 0.5 0.2 0.2 0.3 0.3 0.1 0.4\n", "segment", None),  # 4 points: a valid polygon
        ("0 0.5 0.5 0 0.2\n", "detect", "a.txt:1: box width and height must be > 0"),
        ("0 0.5 0.5\n", "segment", "a.txt:1: segment rows are"),
        ("0 0.5 nan 0.2 0.2\n", "detect", "a.txt:1: non-finite coordinate"),
    ],
)
def test_label_errors_name_file_and_line(tmp_path, rows, task, message):
    data_yaml = _one_image_dataset(tmp_path, rows, task)
    if message is None:
        formats.read_yolo(data_yaml, task)
        return
    with pytest.raises(formats.LabelError) as err:
        formats.read_yolo(data_yaml, task)
    assert message in str(err.value)
    assert str(tmp_path / "labels/train/a.txt") in str(err.value)


def test_empty_and_missing_label_files_mean_no_objects(tmp_path):
    data_yaml = _one_image_dataset(tmp_path, "")
    assert formats.read_yolo(data_yaml, "detect").splits["train"].labels == [[]]
    (tmp_path / "labels/train/a.txt").unlink()
    assert formats.read_yolo(data_yaml, "detect").splits["train"].labels == [[]]


def test_dataset_yaml_errors(tmp_path):
    data_yaml = _one_image_dataset(tmp_path, "")
    data_yaml.write_text(yaml.safe_dump({"names": ["x"], "train": "images/train"}))
    with pytest.raises(formats.LabelError, match="no 'val' split"):
        formats.read_yolo(data_yaml, "detect")
    data_yaml.write_text(yaml.safe_dump({"names": ["x"], "train": "images/train", "val": "images/nope"}))
    with pytest.raises(formats.LabelError, match="split folder or list 'images/nope' not found"):
        formats.read_yolo(data_yaml, "detect")


@pytest.mark.parametrize("kind", ["fish", "coral"])
def test_yolo_to_coco_and_back(datasets, tmp_path, kind):
    """materialise writes COCO ground truth that pycocotools loads; reading it back as COCO gives
    the same labels (boxes within 0.5 px, polygons exact to 1e-5)."""
    from pycocotools.coco import COCO

    task = scenes.KINDS[kind][0]
    ds = formats.read_yolo(datasets[kind], task)
    facts = formats.materialise(ds, tmp_path / "data", task)
    assert facts["splits"]["train"]["objects"] == sum(len(x) for x in ds.splits["train"].labels)
    gt = COCO(str(tmp_path / "data/coco_val.json"))
    assert len(gt.getImgIds()) == 2 and len(gt.getAnnIds()) == sum(len(x) for x in ds.splits["val"].labels)
    paths, labels, names = formats.read_coco(tmp_path / "data/coco_val.json", tmp_path / "data", task)
    assert names == ds.names and len(paths) == 2
    for got, want in zip(labels, ds.splits["val"].labels, strict=True):
        assert [g.cls for g in got] == [w.cls for w in want]
        for g, w in zip(got, want, strict=True):
            h, wd = 96, 128
            assert np.abs((g.xyxy() - w.xyxy()) * [wd, h, wd, h]).max() < 0.5
            if task == "segment":
                np.testing.assert_allclose(g.coords, w.coords, atol=1e-5)
    # the materialised folder is itself a valid YOLO dataset
    again = formats.read_yolo(tmp_path / "data/data.yaml", task)
    assert [len(x) for x in again.splits["val"].labels] == [len(x) for x in ds.splits["val"].labels]


def test_coco_errors_name_the_annotation(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},
            {"id": 8, "image_id": 1, "category_id": 5, "bbox": [1, 1, 10, 10]},
        ],
        "categories": [{"id": 1, "name": "fish"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    with pytest.raises(
        formats.LabelError, match=r"a.json: annotations\[1\] \(id 8\): category_id 5 not in categories"
    ):
        formats.read_coco(tmp_path / "a.json", tmp_path, "detect")
    coco["annotations"][1].update(category_id=1, bbox=[50, 30, 20, 20])
    (tmp_path / "a.json").write_text(json.dumps(coco))
    with pytest.raises(formats.LabelError, match=r"bbox \[50, 30, 20, 20\] outside the 60x40 image"):
        formats.read_coco(tmp_path / "a.json", tmp_path, "detect")
    (tmp_path / "a.json").write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(formats.LabelError, match=r"a.json:2: not valid JSON"):
        formats.read_coco(tmp_path / "a.json", tmp_path, "detect")
    with pytest.raises(formats.LabelError, match="oriented boxes have no COCO form"):
        formats.read_coco(tmp_path / "a.json", tmp_path, "obb")


def test_coco_rle_segmentation_becomes_a_polygon(tmp_path):
    import cv2
    from pycocotools import mask as mask_utils

    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    coco = {
        "images": [{"id": 3, "file_name": "a.png", "width": 60, "height": 40}],
        "annotations": [{"id": 1, "image_id": 3, "category_id": 2, "segmentation": rle, "iscrowd": 0}],
        "categories": [{"id": 2, "name": "coral"}],
    }
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "a.json").write_text(json.dumps(coco))
    _, labels, names = formats.read_coco(tmp_path / "a.json", tmp_path, "segment")
    assert names == ["coral"]
    (lab,) = labels[0]
    np.testing.assert_allclose(lab.xyxy() * [60, 40, 60, 40], [20, 10, 49, 29])


def test_coco_classes_follow_the_configured_names_not_the_category_order(tmp_path):
    """Categories {1: fish, 2: coral} read with names [coral, fish]: a fish box is class 1 ("fish")."""
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    coco = {
        "images": [{"id": 5, "file_name": "a.png", "width": 60, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "bbox": [6, 4, 30, 20]},  # fish
            {"id": 2, "image_id": 5, "category_id": 2, "bbox": [-1, -1, 61, 41]},  # coral, 1 px tolerance
        ],
        "categories": [{"id": 2, "name": "coral"}, {"id": 1, "name": "fish"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    paths, labels, names = formats.read_coco(tmp_path / "a.json", tmp_path, "detect", names=["coral", "fish"])
    assert names == ["coral", "fish"] and paths == [tmp_path / "a.png"]
    fish, coral = labels[0]
    assert (names[fish.cls], names[coral.cls]) == ("fish", "coral")
    assert fish.kind == "box" and coral.kind == "box"
    np.testing.assert_allclose(fish.xyxy() * [60, 40, 60, 40], [6, 4, 36, 24])
    np.testing.assert_allclose(fish.coords, [21 / 60, 14 / 40, 30 / 60, 20 / 40])
    np.testing.assert_allclose(coral.coords, [29.5 / 60, 19.5 / 40, 1, 1])  # size clipped to the image
    # without configured names the classes follow the category ids
    _, labels, names = formats.read_coco(tmp_path / "a.json", tmp_path, "detect")
    assert names == ["fish", "coral"] and [lab.cls for lab in labels[0]] == [0, 1]
    with pytest.raises(formats.LabelError, match=r"categories \['fish'\] not among the configured classes"):
        formats.read_coco(tmp_path / "a.json", tmp_path, "detect", names=["coral"])

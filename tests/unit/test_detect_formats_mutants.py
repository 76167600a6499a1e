"""Detection formats pinned to exact values: rows, names, split lists, COCO conversion both ways,
the materialised folder and its facts, and read_dataset (YOLO or COCO, paths kept under the root)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from aquaflow.data import limits
from aquaflow.data.roots import Root
from aquaflow.tasks.detect import formats
from aquaflow.tasks.detect.formats import Label, LabelError


def _png(path, w=60, h=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)
    return path


def _row(text, task="detect", nc=3):
    return formats._parse_row(text.split(), task, nc, "f.txt:1")


def test_rows_clip_within_the_tolerance_and_name_what_is_wrong():
    box = _row("2 1.0009 0.5 0.2 0.1")
    assert (box.cls, box.kind) == (2, "box") and box.coords.tolist() == [1.0, 0.5, 0.2, 0.1]
    assert _row("0 -0.0009 0 1 1").coords.tolist() == [0, 0, 1, 1]
    assert _row("0.0 0.5 0.5 0.2 0.1").cls == 0
    with pytest.raises(LabelError, match=r"^f.txt:1: coordinate 1.0011 outside \[0, 1\]"):
        _row("0 1.0011 0.5 0.2 0.1")
    with pytest.raises(LabelError, match=r"^f.txt:1: coordinate -0.0011 outside"):
        _row("0 0.5 -0.0011 0.2 0.1")
    with pytest.raises(LabelError, match=r"^f.txt:1: class id 'fish' is not a number$"):
        _row("fish 0.5 0.5 0.2 0.1")
    with pytest.raises(LabelError, match=r"^f.txt:1: could not convert string to float: 'x'"):
        _row("0 0.5 x 0.2 0.1")
    with pytest.raises(LabelError, match=r"^f.txt:1: class id -1 unknown \(dataset has 3 classes: 0..2\)"):
        _row("-1 0.5 0.5 0.2 0.1")
    with pytest.raises(LabelError, match="class id 3 unknown"):
        _row("3 0.5 0.5 0.2 0.1")
    with pytest.raises(LabelError, match=r"^f.txt:1: non-finite coordinate$"):
        _row("0 0.5 inf 0.2 0.1")
    with pytest.raises(LabelError, match=r"^f.txt:1: box width and height must be > 0$"):
        _row("0 0.5 0.5 0.2 0")
    with pytest.raises(LabelError, match=r"\(8 values\), got 6$"):
        _row("0 0.1 0.1 0.2 0.1 0.2 0.2", "obb")
    with pytest.raises(
        LabelError, match=r"^f.txt:1: detect rows are 'class xc yc w h' \(4 values\), got 5 values$"
    ):
        _row("0 0.1 0.1 0.2 0.1 0.2")
    with pytest.raises(
        LabelError, match=r"segment rows are 'class x1 y1 ... xn yn' \(n >= 3 points\), got 4"
    ):
        _row("0 0.1 0.1 0.2 0.1", "segment")
    with pytest.raises(LabelError, match="got 7 values"):
        _row("0 0.1 0.1 0.2 0.1 0.2 0.2 0.3", "segment")


def test_polygons_obb_and_their_boxes():
    tri = _row("1 0.1 0.2 0.5 0.2 0.3 0.6", "segment")
    assert tri.kind == "polygon" and tri.coords.shape == (3, 2)
    assert tri.xyxy() == pytest.approx([0.1, 0.2, 0.5, 0.6])
    in_detect = _row("1 0.1 0.2 0.5 0.2 0.3 0.6")  # a polygon in a detect dataset: its box is used
    assert in_detect.kind == "polygon"
    assert formats.label_row(in_detect, "detect") == "1 0.300000 0.400000 0.400000 0.400000"
    assert formats.label_row(tri, "segment") == "1 0.100000 0.200000 0.500000 0.200000 0.300000 0.600000"
    obb = _row("0 0.1 0.1 0.3 0.1 0.3 0.2 0.1 0.2", "obb")
    assert (
        obb.kind == "obb" and obb.coords.shape == (4, 2) and obb.xyxy() == pytest.approx([0.1, 0.1, 0.3, 0.2])
    )
    box = Label(0, "box", np.array([0.5, 0.4, 0.2, 0.4]))
    assert box.xyxy() == pytest.approx([0.4, 0.2, 0.6, 0.6])
    assert formats.label_row(box, "detect") == "0 0.500000 0.400000 0.200000 0.400000"


def test_label_files_skip_blank_lines_and_number_the_rest(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("0 0.5 0.5 0.2 0.2\n\n   \n1 0.5 0.5 0.1 0.1\n")
    labels = formats.read_label_file(f, "detect", 2)
    assert [lab.cls for lab in labels] == [0, 1]
    f.write_text("0 0.5 0.5 0.2 0.2\n\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LabelError, match=rf"^{f}:3: class id 7"):
        formats.read_label_file(f, "detect", 2)
    assert formats.read_label_file(tmp_path / "none.txt", "detect", 2) == []


def test_label_path_replaces_the_last_images_folder():
    sep = os.sep
    assert str(formats.label_path(f"{sep}d{sep}images{sep}x{sep}images{sep}a.JPG")) == (
        f"{sep}d{sep}images{sep}x{sep}labels{sep}a.txt"
    )
    assert str(formats.label_path(f"{sep}d{sep}imgs{sep}a.png")) == f"{sep}d{sep}imgs{sep}a.txt"


def test_names_from_a_list_a_dict_or_nc():
    assert formats._names({"names": {1: "b", 0: "a"}}, "y") == ["a", "b"]
    assert formats._names({"names": ["a", 2]}, "y") == ["a", "2"]
    assert formats._names({"nc": 2}, "y") == ["class_0", "class_1"]
    with pytest.raises(LabelError, match=r"^y: 'names' keys must be 0..1, got \[0, 2\]$"):
        formats._names({"names": {0: "a", 2: "b"}}, "y")
    with pytest.raises(LabelError, match=r"^y: no 'names' \(class names\) in the dataset YAML$"):
        formats._names({}, "y")


def test_split_lists_folders_and_absolute_paths(tmp_path):
    a = _png(tmp_path / "images/a.png")
    b = _png(tmp_path / "images/sub/B.JPG")
    (tmp_path / "images/notes.txt").write_text("x")
    (tmp_path / "images/c.png.d").mkdir()  # a folder named like an image is not one
    assert formats._split_images(tmp_path, "images", "w") == [a, b]
    (tmp_path / "list.txt").write_text(f"images/a.png\n\n  {b}  \n")
    assert formats._split_images(tmp_path, ["list.txt", str(tmp_path / "images/sub")], "w") == [a, b, b]
    with pytest.raises(LabelError, match=r"^w: split folder or list 'nope' not found \(looked for "):
        formats._split_images(tmp_path, "nope", "w")
    (tmp_path / "list.csv").write_text("images/a.png\n")
    with pytest.raises(LabelError, match=r"split folder or list 'list\.csv' not found"):
        formats._split_images(tmp_path, "list.csv", "w")
    outside = _png(tmp_path.parent / f"{tmp_path.name}-out.png")
    (tmp_path / "list.txt").write_text(f"{outside}\n")
    with pytest.raises(LabelError, match=rf"^{tmp_path / 'list.txt'}: outside_root: "):
        formats._split_images(tmp_path, "list.txt", "w", Root(tmp_path))
    assert formats._split_images(tmp_path, "list.txt", "w") == [outside]


def _yolo(root, extra=None):
    _png(root / "images/train/a.png")
    _png(root / "images/val/b.png")
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.25 0.25 0.1 0.1\n")
    data = {"names": ["x", "y"], "train": "images/train", "val": "images/val", **(extra or {})}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_read_yolo_path_key_splits_and_errors(tmp_path):
    _yolo(tmp_path / "d")
    splits = {"train": "images/train", "val": "images/val", "test": "images/val"}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"path": "d", "names": ["x", "y"], **splits}))
    ds = formats.read_yolo(tmp_path / "d.yaml", "detect")
    assert list(ds.splits) == ["train", "val", "test"] and ds.origin == str(tmp_path / "d.yaml")
    assert [lab.cls for lab in ds.splits["train"].labels[0]] == [1, 0] and ds.splits["val"].labels == [[]]
    (tmp_path / "d/up.yaml").write_text(
        yaml.safe_dump({"path": "..", "names": ["x"], "train": "d", "val": "d"})
    )
    with pytest.raises(LabelError, match=r"up.yaml \('path'\): outside_root"):
        formats.read_yolo(tmp_path / "d/up.yaml", "detect", Root(tmp_path / "d"))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"path": "e", "names": ["x"], "train": "a", "val": "a"}))
    with pytest.raises(LabelError, match=r"d.yaml: 'path' 'e' is not a folder$"):
        formats.read_yolo(tmp_path / "d.yaml", "detect")
    (tmp_path / "d.yaml").write_text("names: [x\n")
    with pytest.raises(LabelError, match=r"d.yaml: not valid YAML: "):
        formats.read_yolo(tmp_path / "d.yaml", "detect")
    with pytest.raises(LabelError, match=r"no.yaml: dataset YAML not found$"):
        formats.read_yolo(tmp_path / "no.yaml", "detect")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"names": ["x"], "val": "d/images/val"}))
    with pytest.raises(LabelError, match=r"d.yaml: no 'train' split \(Ultralytics needs train and val\)$"):
        formats.read_yolo(tmp_path / "d.yaml", "detect")


def test_to_coco_boxes_polygons_and_obb_in_pixels(tmp_path):
    img = _png(tmp_path / "a.png", 100, 50)
    box = Label(1, "box", np.array([0.5, 0.5, 0.2, 0.4]))
    tri = Label(0, "polygon", np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 1.0]]))
    split = formats.Split([img, img], [[box, tri], []])
    coco = formats.to_coco(split, ["p", "q"], "segment", ["n0.png", "n1.png"])
    assert coco["images"] == [
        {"id": 0, "file_name": "n0.png", "width": 100, "height": 50},
        {"id": 1, "file_name": "n1.png", "width": 100, "height": 50},
    ]
    assert coco["categories"] == [{"id": 1, "name": "p"}, {"id": 2, "name": "q"}]
    a_box, a_tri = coco["annotations"]
    assert (a_box["id"], a_box["image_id"], a_box["category_id"], a_box["iscrowd"]) == (1, 0, 2, 0)
    assert a_box["bbox"] == pytest.approx([40, 15, 20, 20]) and a_box["area"] == pytest.approx(400)
    assert "segmentation" not in a_box
    assert (a_tri["id"], a_tri["category_id"]) == (2, 1)
    assert a_tri["bbox"] == pytest.approx([0, 0, 50, 50]) and a_tri["area"] == pytest.approx(50 * 50 / 2)
    assert a_tri["segmentation"] == [pytest.approx([0, 0, 50, 0, 0, 50])] and "obb" not in a_tri
    obb = Label(0, "obb", np.array([[0.1, 0.2], [0.3, 0.2], [0.3, 0.6], [0.1, 0.6]]))
    (ann,) = formats.to_coco(formats.Split([img], [[obb]]), ["p"], "obb", ["n.png"])["annotations"]
    assert ann["obb"] == pytest.approx([10, 10, 30, 10, 30, 30, 10, 30]) and "segmentation" not in ann
    assert ann["area"] == pytest.approx(400) and ann["bbox"] == pytest.approx([10, 10, 20, 20])


def test_materialise_writes_the_folder_and_exact_facts(tmp_path):
    ds = formats.read_yolo(_yolo(tmp_path / "src"), "detect")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/stale.txt").write_text("old")  # the folder is replaced as a whole
    facts = formats.materialise(ds, tmp_path / "out", "detect")
    assert facts == {
        "names": ["x", "y"],
        "task": "detect",
        "source": str(tmp_path / "src/data.yaml"),
        "splits": {
            "train": {"images": 1, "objects": 2, "empty_images": 0, "per_class": {"x": 1, "y": 1}},
            "val": {"images": 1, "objects": 0, "empty_images": 1, "per_class": {"x": 0, "y": 0}},
        },
    }
    out = tmp_path / "out"
    assert json.loads((out / "dataset.json").read_text()) == facts
    assert not (out / "stale.txt").exists() and not (tmp_path / ".out.partial").exists()
    assert yaml.safe_load((out / "data.yaml").read_text()) == {
        "path": str(out.resolve()), "names": {0: "x", 1: "y"}, "train": "images/train", "val": "images/val",
    }  # fmt: skip
    assert (out / "images/train/000000_a.png").read_bytes() == (
        tmp_path / "src/images/train/a.png"
    ).read_bytes()
    assert (out / "labels/train/000000_a.txt").read_text() == (
        "1 0.500000 0.500000 0.500000 0.500000\n0 0.250000 0.250000 0.100000 0.100000\n"
    )
    assert (out / "labels/val/000000_b.txt").read_text() == ""
    coco = json.loads((out / "coco_train.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["images/train/000000_a.png"]
    assert [a["category_id"] for a in coco["annotations"]] == [2, 1]
    again = formats.read_yolo(out / "data.yaml", "detect")
    assert [lab.cls for lab in again.splits["train"].labels[0]] == [1, 0]


def _coco(root, anns, images=None, cats=None):
    (root / "ann.json").write_text(
        json.dumps(
            {
                "images": images or [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
                "annotations": anns,
                "categories": cats or [{"id": 1, "name": "fish"}],
            }
        )
    )
    return root / "ann.json"


def test_coco_validation_messages(tmp_path):
    _png(tmp_path / "a.png")
    with pytest.raises(LabelError, match=r"nope.json: COCO annotations file not found$"):
        formats.read_coco(tmp_path / "nope.json", tmp_path, "detect")
    (tmp_path / "x.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(LabelError, match=r"x.json: no 'categories' list \(a COCO instances file has images"):
        formats.read_coco(tmp_path / "x.json", tmp_path, "detect")
    bad_image = [{"id": 1, "file_name": "a.png", "width": 60}]
    with pytest.raises(LabelError, match=r"ann.json: images\[0\] has no 'height'$"):
        formats.read_coco(_coco(tmp_path, [], bad_image), tmp_path, "detect")
    ann = {"id": 4, "image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5]}
    with pytest.raises(LabelError, match=r"annotations\[0\] \(id 4\): image_id 9 not in images$"):
        formats.read_coco(_coco(tmp_path, [ann]), tmp_path, "detect")
    ann["image_id"] = 1
    for bbox in ([1, 1, 0, 5], [1, 1, 5, 0], [-2, 1, 5, 5], [1, -2, 5, 5], [56, 1, 5.5, 5], [1, 36, 5, 5.5]):
        with pytest.raises(LabelError, match=r"outside the 60x40 image or empty$"):
            formats.read_coco(_coco(tmp_path, [{**ann, "bbox": bbox}]), tmp_path, "detect")
    for bbox in ([-1, -1, 5, 5], [55, 35, 6, 6]):  # within the 1 px tolerance
        formats.read_coco(_coco(tmp_path, [{**ann, "bbox": bbox}]), tmp_path, "detect")
    with pytest.raises(LabelError, match=r"\(id 4\): no bbox$"):
        formats.read_coco(
            _coco(tmp_path, [{k: v for k, v in ann.items() if k != "bbox"}]), tmp_path, "detect"
        )
    with pytest.raises(LabelError, match=r"no segmentation \(task segment needs polygons or RLE\)$"):
        formats.read_coco(_coco(tmp_path, [{**ann, "segmentation": []}]), tmp_path, "segment")
    for seg in ([[1, 1, 5, 1]], [[1, 1, 5, 1, 5, 5, 9]]):
        with pytest.raises(LabelError, match="polygon with fewer than 3 points or an odd coordinate count"):
            formats.read_coco(_coco(tmp_path, [{**ann, "segmentation": seg}]), tmp_path, "segment")
    gone = [{"id": 1, "file_name": "gone.png", "width": 60, "height": 40}]
    with pytest.raises(
        LabelError, match=rf"ann.json: image {tmp_path / 'gone.png'} listed in the JSON does not exist"
    ):
        formats.read_coco(_coco(tmp_path, [], gone), tmp_path, "detect")
    out = [{"id": 1, "file_name": "../a.png", "width": 60, "height": 40}]
    (tmp_path / "sub").mkdir()
    with pytest.raises(LabelError, match=r"ann.json: image 1: outside_root"):
        formats.read_coco(_coco(tmp_path, [], out), tmp_path / "sub", "detect", within=Root(tmp_path / "sub"))


def test_coco_polygons_use_the_largest_part_and_boxes_convert_to_centre_size(tmp_path):
    _png(tmp_path / "a.png")
    small, large = [1, 1, 3, 1, 1, 3], [30, 0, 60, 0, 60, 40, 30, 40]
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 0, 30, 40], "segmentation": [small, large]}
    paths, labels, names = formats.read_coco(_coco(tmp_path, [ann]), tmp_path, "segment")
    (lab,) = labels[0]
    assert lab.kind == "polygon" and lab.coords.tolist() == [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]
    assert paths == [tmp_path / "a.png"] and names == ["fish"]
    _, labels, _ = formats.read_coco(_coco(tmp_path, [ann]), tmp_path, "detect")
    assert labels[0][0].kind == "box" and labels[0][0].coords.tolist() == [0.75, 0.5, 0.5, 1.0]


def test_rle_size_must_match_the_image_and_the_limit(tmp_path):
    img = _png(tmp_path / "a.png")
    formats.check_rle_size({"size": [40, 60]}, 40, 60, img)
    for size in ([60, 40], [40], None, (40, 60)):
        with pytest.raises(LabelError, match=r"is not its image's \[height, width\] \[40, 60\]$"):
            formats.check_rle_size({"size": size}, 40, 60, img)
    with pytest.raises(LabelError, match=r"^RLE mask of 1000000x1000000 px exceeds \d+ px$"):
        formats.check_rle_size({"size": [10**6, 10**6]}, 10**6, 10**6, img)
    with pytest.raises(LabelError, match=r"^image .*b.png of an RLE mask does not exist$"):
        formats.check_rle_size({"size": [40, 60]}, 40, 60, tmp_path / "b.png")
    with pytest.raises(LabelError, match=r"^image .*a.png is \(60, 40\) px, its entry says 60x41$"):
        formats.check_rle_size({"size": [41, 60]}, 41, 60, img)


def test_read_dataset_yolo_or_coco_per_split_with_names_and_root(tmp_path):
    _yolo(tmp_path / "y")
    ds = formats.read_dataset(tmp_path, {"format": "yolo", "yaml": "y/data.yaml"}, "detect")
    assert ds.names == ["x", "y"] and list(ds.splits) == ["train", "val"]
    _png(tmp_path / "c/imgs/a.png")
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [6, 4, 30, 20]}
    _coco(tmp_path / "c", [ann], cats=[{"id": 1, "name": "fish"}, {"id": 2, "name": "coral"}])
    split = {"annotations": "c/ann.json", "images": "c/imgs"}
    spec = {
        "format": "coco",
        "coco": {"val": split, "train": split, "test": split},
        "names": ["coral", "fish"],
    }
    ds = formats.read_dataset(tmp_path, spec, "detect")
    assert ds.names == ["coral", "fish"] and ds.origin == str(tmp_path)
    assert list(ds.splits) == ["train", "val", "test"] and ds.splits["val"].images == [
        tmp_path / "c/imgs/a.png"
    ]
    assert [lab.cls for lab in ds.splits["test"].labels[0]] == [1]
    ds = formats.read_dataset(tmp_path, {**spec, "names": []}, "detect")  # no names: the category order
    assert ds.names == ["fish", "coral"] and ds.splits["train"].labels[0][0].cls == 0
    with pytest.raises(
        LabelError, match=r"^detection.data.coco needs train and val entries \(has \['train'\]\)$"
    ):
        formats.read_dataset(tmp_path, {"format": "coco", "coco": {"train": split}}, "detect")
    _png(tmp_path / "c/a.png")
    moved = {"annotations": "c/ann.json", "images": "c/imgs/.."}  # images default to the root: "."
    assert formats.read_dataset(tmp_path, {**spec, "coco": {"train": moved, "val": moved}}, "detect").names
    elsewhere = tmp_path.parent / f"{tmp_path.name}-else"
    _png(elsewhere / "a.png")
    far = {"annotations": "c/ann.json", "images": str(elsewhere)}
    with pytest.raises(LabelError, match="outside_root"):
        formats.read_dataset(tmp_path, {**spec, "coco": {"train": far, "val": far}}, "detect")
    ds = formats.read_dataset(tmp_path, {**spec, "coco": {"train": far, "val": far}}, "detect", True)
    assert ds.splits["train"].images == [elsewhere / "a.png"]


def test_row_bounds_are_inclusive_and_the_message_names_the_first_bad_value():
    assert _row("0 -0.001 1.001 0.2 0.1").coords.tolist() == [0, 1, 0.2, 0.1]  # exactly at the tolerance
    with pytest.raises(LabelError, match=r"coordinate 1.5 outside"):
        _row("0 -0.001 0.9995 1.5 0.1")
    assert _row("2 0.1 0.1 0.3 0.1 0.3 0.2 0.1 0.2", "obb").cls == 2


def test_coco_edges_one_pixel_boxes_clipping_and_rle_messages(tmp_path):
    _png(tmp_path / "a.png")
    ann = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 1, 1]}
    _, labels, _ = formats.read_coco(_coco(tmp_path, [ann]), tmp_path, "detect")  # a 1-px box is a box
    assert labels[0][0].coords == pytest.approx([1.5 / 60, 1.5 / 40, 1 / 60, 1 / 40])
    edge = {**ann, "bbox": [-1, 5, 1, 5]}  # centre left of the image: clipped to 0
    assert formats.read_coco(_coco(tmp_path, [edge]), tmp_path, "detect")[1][0][0].coords[0] == 0.0
    poly = {**ann, "segmentation": [[-6, 20, 30, -4, 66, 44]]}  # points beyond the image: clipped
    (lab,) = formats.read_coco(_coco(tmp_path, [poly]), tmp_path, "segment")[1][0]
    assert lab.coords.tolist() == [[0, 0.5], [0.5, 0], [1, 1]]
    bad_rle = {**ann, "segmentation": {"size": [41, 60], "counts": "abc"}}
    with pytest.raises(LabelError, match=r"ann.json: annotations\[0\] \(id 4\): RLE size \[41, 60\] is not"):
        formats.read_coco(_coco(tmp_path, [bad_rle]), tmp_path, "segment")
    with pytest.raises(LabelError, match=r"does not exist$"):  # exactly at the limit: not too large
        formats.check_rle_size(
            {"size": [1, limits.MAX_MASK_PIXELS]}, 1, limits.MAX_MASK_PIXELS, tmp_path / "x"
        )


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F")
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    return {"size": list(mask.shape), "counts": [*runs, n]}


def test_rle_lists_largest_blob_and_blobs_too_small_for_a_polygon(tmp_path):
    _png(tmp_path / "a.png")
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 1
    mask[2:4, 2:4] = 1  # a smaller second blob
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _uncompressed_rle(mask)}
    (lab,) = formats.read_coco(_coco(tmp_path, [ann]), tmp_path, "segment")[1][0]
    np.testing.assert_allclose(lab.xyxy() * [60, 40, 60, 40], [20, 10, 49, 29])
    dot = np.zeros((40, 60), np.uint8)
    dot[5, 5] = 1
    ann["segmentation"] = _uncompressed_rle(dot)
    assert formats.read_coco(_coco(tmp_path, [ann]), tmp_path, "segment")[1] == [[]]


def test_outside_root_messages_name_the_split_for_links_and_list_files(tmp_path):
    root = tmp_path / "d"
    _yolo(root)
    elsewhere = _png(tmp_path / "else/x.png")
    os.symlink(elsewhere, root / "images/train/link.png")
    with pytest.raises(LabelError, match=rf"^{root / 'data.yaml'} \(train\): outside_root"):
        formats.read_yolo(root / "data.yaml", "detect", Root(root))
    (root / "images/train/link.png").unlink()
    (tmp_path / "list.txt").write_text(f"{root / 'images/val/b.png'}\n")
    data = {"names": ["x", "y"], "train": "images/train", "val": str(tmp_path / "list.txt")}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(LabelError, match=rf"^{root / 'data.yaml'} \(val\): outside_root"):
        formats.read_yolo(root / "data.yaml", "detect", Root(root))
    (root / "data.yaml").write_text(yaml.safe_dump({"nc": 2, "names": {0: "x", 5: "y"}}))
    with pytest.raises(LabelError, match=rf"^{root / 'data.yaml'}: 'names' keys"):
        formats.read_yolo(root / "data.yaml", "detect")


def test_materialise_replaces_a_stale_partial_folder_and_boxes_polygons(tmp_path):
    src = _yolo(tmp_path / "src")
    (tmp_path / "src/labels/train/a.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.6\n")  # a polygon
    (tmp_path / ".out.partial").mkdir()
    (tmp_path / ".out.partial/junk.txt").write_text("from a killed run")
    formats.materialise(formats.read_yolo(src, "detect"), tmp_path / "out", "detect")
    assert not (tmp_path / "out/junk.txt").exists()
    assert (
        tmp_path / "out/labels/train/000000_a.txt"
    ).read_text() == "1 0.300000 0.400000 0.400000 0.400000\n"
    assert list(yaml.safe_load((tmp_path / "out/data.yaml").read_text())) == ["path", "names", "train", "val"]


def test_read_dataset_defaults_and_its_root_for_yolo(tmp_path):
    _png(tmp_path / "a.png")
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "bbox": [6, 4, 30, 20],
        "segmentation": [[6, 4, 36, 4, 36, 24]],
    }
    _coco(tmp_path, [ann])
    split = {"annotations": "ann.json"}  # images: the root
    ds = formats.read_dataset(tmp_path, {"format": "coco", "coco": {"train": split, "val": split}}, "segment")
    assert ds.splits["val"].images == [tmp_path / "a.png"] and ds.splits["val"].labels[0][0].kind == "polygon"
    with pytest.raises(LabelError, match=r"needs train and val entries \(has \[\]\)$"):
        formats.read_dataset(tmp_path, {"format": "coco"}, "detect")
    _yolo(tmp_path / "y")
    (tmp_path / "y/up.yaml").write_text(
        yaml.safe_dump({"path": "..", "names": ["x", "y"], "train": "y", "val": "y"})
    )
    spec = {"format": "yolo", "yaml": "up.yaml"}
    with pytest.raises(LabelError, match="outside_root"):
        formats.read_dataset(tmp_path / "y", spec, "detect")
    assert formats.read_dataset(tmp_path / "y", spec, "detect", allow_outside_root=True).names == ["x", "y"]

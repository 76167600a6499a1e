"""EcoTaxa export details pinned down: ids and names, crops and their edges, type row, number format,
the TSV reader, EXIF stripping of JPEG and PNG, the bundle's layout and reader, detection objects."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aquaflow.data import imaging
from aquaflow.standards import ecotaxa

CFG = {"sample_id": "s1", "acq_id": "a1"}


def preds(n=2, **columns) -> pd.DataFrame:
    """A classification predictions table of n rows (one label each) plus `columns`."""
    base = {
        "seq": range(n),
        "id": [f"h{i}" for i in range(n)],
        "source": [f"f{i}.jpg" for i in range(n)],
        "top1_label": ["Copepoda"] * n,
        "top1_prob": [0.9] * n,
    }
    return pd.DataFrame({**base, **columns})


def _png(rgb=(10, 200, 30), size=(6, 4), **save) -> bytes:
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:] = rgb
    img[0, 0] = (255, 0, 0)
    out = io.BytesIO()
    Image.fromarray(img).save(out, "PNG", **save)
    return out.getvalue()


def _jpeg(orientation=None, segments=()) -> bytes:
    """A JPEG with an optional EXIF orientation; `segments` are inserted right after SOI."""
    img = np.zeros((8, 10, 3), np.uint8)
    img[2:6, 3:8] = (200, 30, 90)
    out = io.BytesIO()
    save = {"quality": 95}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif[0x010F] = "DeepCam"
        save["exif"] = exif
    Image.fromarray(img).save(out, "JPEG", **save)
    data = out.getvalue()
    return data[:2] + b"".join(segments) + data[2:]


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def test_ids_keep_case_and_lose_outer_underscores():
    p = preds(3, object_name=["__Scan01 a__", "Scan01-b.c", "X1X"])
    assert ecotaxa.object_ids(p, "s").tolist() == ["Scan01_a", "Scan01-b.c", "X1X"]
    q = preds(2, particle_id=["_1_", "2"])
    assert ecotaxa.object_ids(q, "__St A__").tolist() == ["St_A_1", "St_A_2"]
    assert ecotaxa.image_name("x", "a.JPG", False) == "images/x.jpg"  # the default folder
    assert ecotaxa.image_name("x", "a.tif", False) == "images/x.png"
    assert ecotaxa.image_name("x", "a.jpg", True, "") == "x.png"


def test_crop_width_decides_what_is_a_crop():
    """A crop of width 1 px is a crop (PNG); width 0 or NaN is the whole file (kept as JPEG)."""
    p = preds(3, crop_x=[0, 0, 0], crop_y=[0, 0, 0], crop_w=[1, np.nan, 0], crop_h=[3, 3, 3])
    df = ecotaxa.table(p, 1, CFG, "UVP")
    assert df["img_file_name"].tolist() == [
        "images/s1_000001.png",
        "images/s1_000002.jpg",
        "images/s1_000003.jpg",
    ]


def test_sample_and_acquisition_per_object_or_per_campaign():
    p = preds(2, sample_id=[7, 8], object_name=["o1", "o2"])
    df = ecotaxa.table(p, 1, {"sample_id": "camp"}, "UVP")
    assert df["sample_id"].tolist() == ["7", "8"] and df["acq_id"].tolist() == ["7", "8"]
    assert "object_name" not in df and "object_object_name" not in df
    df = ecotaxa.table(preds(2), 1, {"sample_id": "camp"}, "UVP")
    assert df["sample_id"].tolist() == ["camp", "camp"] and df["acq_id"].tolist() == ["camp", "camp"]


def test_class_probability_stops_at_the_last_top_k_column_and_keeps_six_decimals():
    p = preds(2, top2_label=["Noctiluca", "Copepoda"], top2_prob=[0.12345678, 0.1])
    p["top1_label"] = ["Copepoda", "Noctiluca"]
    assert ecotaxa.class_probability(p, "Noctiluca", 5).tolist() == [0.123457, 0.9]


def test_type_row_text_for_sample_acq_process_and_booleans():
    df = pd.DataFrame(
        {
            "sample_depth": [5.0],
            "acq_volume": [2],
            "process_x": [1.5],
            "object_flag": [True],
            "object_area": [3.0],
        }
    )
    assert ecotaxa.type_row(df) == ["[t]", "[t]", "[t]", "[t]", "[f]"]


def test_tsv_numbers_six_significant_digits_and_the_reader_keeps_text(tmp_path):
    df = pd.DataFrame(
        {"img_file_name": ["a.png", "b.png"], "object_id": ["NA", "x"], "object_v": [0.1234567891, 1.5e-7]}
    )
    df["object_note"] = ["", "n"]
    ecotaxa.write_tsv(df, tmp_path / "e.tsv")
    lines = (tmp_path / "e.tsv").read_text().split("\n")
    assert lines[2] == "a.png\tNA\t0.123457\t" and lines[3] == "b.png\tx\t1.5e-07\tn" and lines[4] == ""
    back, types = ecotaxa.read_tsv(tmp_path / "e.tsv")
    assert types == ["[t]", "[t]", "[f]", "[t]"]
    assert back["object_id"].tolist() == ["NA", "x"] and back["object_note"].tolist() == ["", "n"]
    assert back["object_v"].tolist() == ["0.123457", "1.5e-07"]
    df["object_id"] = ["é", "x"]  # non-ASCII: written with a BOM, read without it in the first name
    ecotaxa.write_tsv(df, tmp_path / "u.tsv")
    back, _ = ecotaxa.read_tsv(tmp_path / "u.tsv")
    assert back.columns[0] == "img_file_name" and back["object_id"].tolist() == ["é", "x"]


def test_zooprocess_rounds_lengths_to_three_decimals_and_needs_the_pixel_size():
    p = preds(1, object_major=[10.12345 * 0.01], process_particle_pixel_size_mm=[0.01])
    df = ecotaxa.table(p, 1, {**CFG, "convention": "zooprocess"}, "Zooscan")
    assert df["object_major"].tolist() == [10.123]
    with pytest.raises(
        ValueError, match=r"^export\.ecotaxa\.convention zooprocess needs process_particle_pixel_size_mm$"
    ):
        ecotaxa.table(preds(1), 1, {**CFG, "convention": "zooprocess"}, "Zooscan")


def test_orientation_segment_is_a_well_formed_app1():
    seg = ecotaxa._orientation_exif(8)
    assert seg[:2] == b"\xff\xe1" and int.from_bytes(seg[2:4], "big") == len(seg) - 2
    back = _jpeg(segments=[seg])
    with Image.open(io.BytesIO(back)) as im:
        assert im.getexif()[0x0112] == 8


def test_jpeg_stripping_keeps_other_segments_and_puts_orientation_first():
    comment = _segment(0xFE, b"c" * 300)  # longer than 255 bytes: its length needs both bytes
    extension = _segment(0xE1, b"http://ns.adobe.com/xmp/extension/\x00" + b"k" * 20)  # not EXIF/XMP
    app2 = _segment(0xE2, b"Exif\x00\x00" + b"z" * 10)  # an EXIF header, but not in APP1
    data = _jpeg(orientation=3, segments=[comment, extension, app2])
    out = ecotaxa.strip_exif(data)
    assert comment in out and extension in out and app2 in out and b"DeepCam" not in out
    assert out[:4] == b"\xff\xd8\xff\xe1"  # SOI, then the orientation segment
    with Image.open(io.BytesIO(out)) as im:
        assert im.getexif()[0x0112] == 3 and 0x010F not in im.getexif()
    assert np.array_equal(imaging.decode(out).image, imaging.decode(data).image)
    plain = _jpeg()
    assert ecotaxa.strip_exif(plain) == plain


def test_png_loses_exif_and_xmp_but_not_its_pixels():
    exif = Image.Exif()
    exif[0x010F] = "DeepCam"
    for png in (_png(exif=exif), _png(pnginfo=_xmp())):
        out = ecotaxa.strip_exif(png)
        assert out != png and b"DeepCam" not in out and b"GPSLatitude" not in out
        assert np.array_equal(imaging.decode(out).image, imaging.decode(png).image)
        with Image.open(io.BytesIO(out)) as im:
            assert im.format == "PNG" and not im.info.get("exif") and "XML:com.adobe.xmp" not in im.info
    clean = imaging.encode(np.zeros((4, 6, 3), np.uint8))  # OpenCV's PNG: not re-encoded by Pillow
    assert ecotaxa.strip_exif(clean) == clean
    gif = io.BytesIO()
    Image.new("P", (4, 4)).save(gif, "GIF")
    assert ecotaxa.strip_exif(gif.getvalue()) == gif.getvalue()


def _xmp():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta><exif:GPSLatitude>43N</exif:GPSLatitude></x:xmpmeta>")
    return info


def test_item_image_originals_crops_and_the_reader_given():
    jpeg, png = _jpeg(orientation=6), _png(size=(6, 4))
    files = {"/nowhere/a.jpg": jpeg, "/nowhere/b.tif": png, "/nowhere/c.png": png}
    read = files.__getitem__
    data, converted = ecotaxa.item_image("/nowhere/a.jpg", None, read)
    assert not converted and data == ecotaxa.strip_exif(jpeg) and data != jpeg  # exif off by default
    assert ecotaxa.item_image("/nowhere/a.jpg", None, read, exif=True) == (jpeg, False)
    data, converted = ecotaxa.item_image("/nowhere/b.tif", None, read)  # not an EcoTaxa format
    assert converted and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(imaging.decode(data).image, imaging.decode(png).image)
    data, converted = ecotaxa.item_image("/nowhere/c.png", (0, 0, 2, 3), read)  # a crop of a PNG
    assert converted and data[:4] == b"\x89PNG" and imaging.decode(data).image.shape == (3, 2, 3)
    assert imaging.decode(data).image[0, 0].tolist() == [255, 0, 0]
    data, converted = ecotaxa.item_image("/nowhere/a.jpg", (3, 2, 5, 4), read)  # a crop of a JPEG
    assert converted and data[:4] == b"\x89PNG" and imaging.decode(data).image.shape == (4, 5, 3)


def test_bundle_layout_crop_edges_and_the_reader(tmp_path):
    png = _png(size=(6, 4))
    files = {f"/nowhere/{c}.png": png for c in "abcd"}
    p = preds(4, crop_x=[0, 0, 1, 0], crop_y=[0, 0, 1, 0], crop_w=[1, 0, 2, 0], crop_h=[2, 5, 2, 0])
    p["source"] = list(files)
    tsv = tmp_path / "ecotaxa_t.tsv"
    ecotaxa.write_tsv(ecotaxa.table(p, 1, CFG, "UVP"), tsv)
    ecotaxa.write_bundle(p, tsv, tmp_path / "t.zip", read=files.__getitem__)
    with zipfile.ZipFile(tmp_path / "t.zip") as zf:
        assert zf.namelist()[0] == "ecotaxa_t.tsv" and zf.read("ecotaxa_t.tsv") == tsv.read_bytes()
        shapes = [imaging.decode(zf.read(f"images/s1_00000{i}.png")).image.shape for i in range(1, 5)]
    assert shapes == [(2, 1, 3), (4, 6, 3), (2, 2, 3), (4, 6, 3)]  # width 0: the whole image
    ecotaxa.write_tsv(ecotaxa.table(p.iloc[:3], 1, CFG, "UVP"), tsv)
    with pytest.raises(ValueError):  # a TSV of other predictions
        ecotaxa.write_bundle(p, tsv, tmp_path / "u.zip", read=files.__getitem__)


def test_export_of_detections_and_campaign_acquisition(tmp_path):
    """Detection objects (one per detection, a per-object sample each its own acquisition), and a
    campaign's acq_id given in the metadata lands in the usual column order."""
    det = pd.DataFrame(
        {
            "seq": [0, 0],
            "id": ["h0", "h0"],
            "source": ["a.png", "a.png"],
            "sample_id": ["S1", "S1"],
            "det": [0, 1],
            "class": ["fish", "coral"],
            "class_id": [0, 1],
            "score": [0.9, 0.5],
            "x": [1.0, 10.0],
            "y": [1.0, 10.0],
            "w": [4.0, 5.0],
            "h": [4.0, 5.0],
            "area_px": [16.0, 25.0],
            "image_width": [32, 32],
            "image_height": [32, 32],
        }
    )
    det.to_parquet(tmp_path / "d.parquet")
    objects = {"task": "detect", "sample_column": "sample_id", "default_sample": "camp", "pixel_size": None}
    settings = {
        "metadata": {},
        "default_sample_id": "camp",
        "top_k": 1,
        "instrument": "ROV",
        "objects": objects,
    }
    assert ecotaxa.export(tmp_path / "d.parquet", tmp_path / "e.tsv", settings) == 2
    df, _ = ecotaxa.read_tsv(tmp_path / "e.tsv")
    assert df["object_id"].tolist() == ["S1_000001_001", "S1_000001_002"]
    assert df["acq_id"].tolist() == ["S1", "S1"] and df["object_annotation_category"].tolist() == [
        "fish",
        "coral",
    ]
    p = preds(2)
    p.to_parquet(tmp_path / "p.parquet")
    settings = {
        "metadata": {"sample_id": "S", "acq_id": "A"},
        "default_sample_id": "c",
        "top_k": 1,
        "instrument": "UVP",
    }
    ecotaxa.export(tmp_path / "p.parquet", tmp_path / "p.tsv", settings)
    df, _ = ecotaxa.read_tsv(tmp_path / "p.tsv")
    assert list(df.columns)[-5:] == [
        "sample_id",
        "acq_id",
        "acq_instrument",
        "process_id",
        "process_model_id",
    ]
    assert df["acq_id"].tolist() == ["A", "A"] and df["sample_id"].tolist() == ["S", "S"]

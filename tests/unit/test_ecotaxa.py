import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aquaflow.data import imaging
from aquaflow.data.flowcam import list_run
from aquaflow.standards import ecotaxa
from aquaflow.synthetic.flowcam import write_run

CFG = {"sample_id": "s1", "acq_id": "a1"}


def predictions(table: pd.DataFrame) -> pd.DataFrame:
    """A predictions table as the shard engine writes it (fixed labels, for the export only)."""
    out = table.copy()
    out.insert(1, "id", [f"{i:016x}" for i in range(len(out))])
    out["top1_label"], out["top1_prob"] = "Copepoda", np.float32(0.9)
    out["top2_label"], out["top2_prob"] = "détritus", np.float32(0.05)
    out["model_id"], out["run_id"] = "m" * 64, "r" * 16
    return out


def test_flowcam_crops_bundle_and_types(tmp_path):
    truth = write_run(tmp_path / "run", n_particles=6, per_collage=4)
    table = list_run(tmp_path / "run")
    table.insert(0, "seq", range(len(table)))
    pred = predictions(table)
    df = ecotaxa.table(pred, 2, CFG, "FlowCam", {"Copepoda": "Copepoda<Maxillopoda"})
    ecotaxa.write_tsv(df, tmp_path / "ecotaxa_x.tsv")
    raw = (tmp_path / "ecotaxa_x.tsv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # non-ASCII text (détritus) -> UTF-8 with BOM
    back, types = ecotaxa.read_tsv(tmp_path / "ecotaxa_x.tsv")
    typed = dict(zip(back.columns, types, strict=True))
    assert typed["object_area_abd"] == "[f]" and typed["object_timestamp"] == "[t]"
    assert typed["object_particle_id"] == "[f]" and typed["sample_id"] == "[t]"
    assert "crop_x" not in typed and "object_crop_x" not in typed
    assert (back["object_annotation_category"] == "Copepoda<Maxillopoda").all()
    assert (back["object_pred_top2"] == "détritus").all()
    assert back["img_file_name"].str.endswith(".png").all()  # crops become PNG files
    ecotaxa.write_bundle(pred, tmp_path / "ecotaxa_x.tsv", tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        for name, t in zip(back["img_file_name"], truth, strict=True):
            assert np.array_equal(imaging.decode(zf.read(name)).image, t["pixels"])


def test_ascii_file_has_no_bom_and_keeps_original_jpegs(tmp_path, planktonclas_resources):
    src = sorted((planktonclas_resources / "demo-images" / "Tripos").glob("*.jpg"))[:3]
    pred = predictions(pd.DataFrame({"seq": range(3), "source": [str(p) for p in src]}))
    pred["top2_label"] = "Tripos"
    df = ecotaxa.table(pred, 2, CFG, "FlowCam")
    ecotaxa.write_tsv(df, tmp_path / "e.tsv")
    lines = (tmp_path / "e.tsv").read_text(encoding="ascii").splitlines()
    assert len(lines) == 5 and lines[1].split("\t")[:4] == ["[t]"] * 4
    ecotaxa.write_bundle(pred, tmp_path / "e.tsv", tmp_path / "e.zip")
    with zipfile.ZipFile(tmp_path / "e.zip") as zf:
        names = [n for n in zf.namelist() if n.startswith("images/")]
        assert sorted(zf.read(n) for n in names) == sorted(p.read_bytes() for p in src)


def reimport(path) -> pd.DataFrame:
    """Read an EcoTaxa TSV the way EcoTaxa's importer does (not with our reader): latin-1 unless a
    UTF-8 BOM, tab-separated, header names lower-cased, line 2 = [t]/[f] types; check its rules."""
    raw = Path(path).read_bytes()[:3]
    encoding = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "latin-1"
    types = pd.read_csv(path, sep="\t", nrows=1, dtype=str, encoding=encoding, quotechar='"')
    df = pd.read_csv(path, sep="\t", skiprows=[1], dtype=str, keep_default_na=False, encoding=encoding)
    df.columns = [c.strip().lower() for c in df.columns]
    assert all(re.match(r"^(img|object|sample|acq|process)_.+", c) for c in df.columns), list(df.columns)
    for col, t in zip(df.columns, types.iloc[0], strict=True):
        assert t in ("[t]", "[f]"), (col, t)
        if t == "[f]":
            pd.to_numeric(df[col].replace("", np.nan), errors="raise")
    assert {"img_file_name", "object_id"} <= set(df.columns)
    assert df["object_id"].is_unique and not df.duplicated(["object_id", "img_file_name"]).any()
    assert df["object_annotation_status"].isin(["predicted", "validated", "dubious"]).all()
    assert (df["object_annotation_category"] != "").all()  # a status needs a category
    for level in ("sample", "acq", "process"):
        if any(c.startswith(f"{level}_") for c in df.columns):
            assert f"{level}_id" in df.columns
    return df


def test_identical_crops_get_unique_stable_ids(tmp_path, planktonclas_resources):
    """The same image twice (same content hash) stays two objects, in the TSV and in the ZIP."""
    src = sorted((planktonclas_resources / "demo-images" / "Tripos").glob("*.jpg"))[:2]
    paths = [str(src[0]), str(src[0]), str(src[1])]
    pred = predictions(pd.DataFrame({"seq": range(3), "source": paths}))
    pred["id"] = ["h0", "h0", "h1"]  # the content hash of the shard engine
    df = ecotaxa.table(pred, 2, CFG, "FlowCam")
    assert list(df["object_id"]) == ["s1_000001", "s1_000002", "s1_000003"]
    assert df["img_file_name"].is_unique and list(df["object_sha256"]) == ["h0", "h0", "h1"]
    assert df.equals(ecotaxa.table(pred, 2, CFG, "FlowCam"))  # stable across reruns
    ecotaxa.write_tsv(df, tmp_path / "ecotaxa_t.tsv")
    back = reimport(tmp_path / "ecotaxa_t.tsv")
    ecotaxa.write_bundle(pred, tmp_path / "ecotaxa_t.tsv", tmp_path / "t.zip")
    with zipfile.ZipFile(tmp_path / "t.zip") as zf:
        assert len(zf.namelist()) == len(set(zf.namelist())) == 4  # 3 images + the TSV
        assert set(back["img_file_name"]) <= set(zf.namelist())


def test_flowcam_particle_ids_and_fallback(tmp_path):
    write_run(tmp_path / "run", n_particles=5, per_collage=4)
    table = list_run(tmp_path / "run")
    table.insert(0, "seq", range(len(table)))
    df = ecotaxa.table(predictions(table), 2, CFG, "FlowCam")
    assert list(df["object_id"]) == [f"s1_{p}" for p in table["particle_id"]]
    twice = pd.concat([table, table], ignore_index=True).assign(seq=range(2 * len(table)))
    df2 = ecotaxa.table(predictions(twice), 2, CFG, "FlowCam")  # two runs, same particle ids
    assert df2["object_id"].is_unique and df2["object_id"].iloc[0] == "s1_000001"


def test_zooprocess_convention(tmp_path):
    px = 0.0106
    pred = predictions(
        pd.DataFrame(
            {
                "seq": range(2),
                "source": ["v1.png", "v2.png"],
                "object_name": ["scan01_00001", "scan01_00002"],
                "image": ["scan01", "scan01"],
                "object_area": [100 * px * px, 400 * px * px],
                "object_perim": [40 * px, 80 * px],
                "object_circ": [0.7, 0.8],
                "object_mean": [120.0, 130.0],
                "area_px": [100, 400],
                "process_particle_pixel_size_mm": [px, px],
            }
        )
    )
    df = ecotaxa.table(pred, 2, {**CFG, "convention": "zooprocess"}, "Zooscan")
    assert list(df["object_id"]) == ["scan01_00001", "scan01_00002"]
    assert list(df["img_file_name"]) == ["scan01_00001.png", "scan01_00002.png"]
    assert list(df["object_area"]) == [100, 400] and list(df["object_perim."]) == [40, 80]
    assert list(df["object_circ."]) == [0.7, 0.8] and list(df["object_mean"]) == [120.0, 130.0]
    assert "object_perim" not in df and "object_area_px" not in df
    ecotaxa.write_tsv(df, tmp_path / "ecotaxa_z.tsv")
    back = reimport(tmp_path / "ecotaxa_z.tsv")
    assert back["process_particle_pixel_size_mm"].astype(float).eq(px).all()


def test_zooprocess_area_without_pixel_counts_divides_by_the_pixel_area():
    """A row without `area_px`: mm² -> px² divides by px² (100 and 400 px² at 0.02 mm/px), lengths by px."""
    px = 0.02
    pred = predictions(
        pd.DataFrame(
            {
                "seq": range(2),
                "source": ["v1.png", "v2.png"],
                "object_area": [100 * px**2, 400 * px**2],
                "object_major": [10 * px, 25 * px],
                "process_particle_pixel_size_mm": [px, px],
            }
        )
    )
    df = ecotaxa.table(pred, 1, {**CFG, "convention": "zooprocess"}, "Zooscan")
    assert np.allclose(df["object_area"].astype(float), [100.0, 400.0])
    assert np.allclose(df["object_major"].astype(float), [10.0, 25.0])


def test_export_adds_campaign_metadata_class_scores_and_categories(tmp_path):
    pred = predictions(pd.DataFrame({"seq": range(3), "source": ["a.png", "b.png", "c.png"]}))
    pred["top1_label"] = ["Copepoda", "détritus", "Copepoda"]
    pred["top1_prob"] = [0.9, 0.6, 0.7]
    pred["top2_label"] = ["détritus", "Copepoda", "Noctiluca"]
    pred["top2_prob"] = [0.05, 0.3, 0.2]
    pred.to_parquet(tmp_path / "p.parquet")
    settings = {
        "metadata": {"sample_id": "", "cruise": "BE2026", "acq_volume": 5},
        "default_sample_id": "st 1",
        "top_k": 2,
        "instrument": "FlowCam",
        "class_scores": ["Copepoda", "Noctiluca"],
        "categories": {"Copepoda": "Copepoda<Maxillopoda"},
    }
    assert ecotaxa.export(tmp_path / "p.parquet", tmp_path / "e.tsv", settings) == 3
    df, types = ecotaxa.read_tsv(tmp_path / "e.tsv")
    assert df["sample_id"].tolist() == ["st 1"] * 3 and df["acq_id"].tolist() == ["st 1"] * 3
    assert df["sample_cruise"].tolist() == ["BE2026"] * 3 and df["acq_volume"].tolist() == ["5"] * 3
    assert df["object_annotation_category"].tolist() == [
        "Copepoda<Maxillopoda",
        "détritus",
        "Copepoda<Maxillopoda",
    ]
    assert df["object_pred_top2"].tolist() == ["détritus", "Copepoda<Maxillopoda", "Noctiluca"]
    assert df["object_p_copepoda"].astype(float).tolist() == [0.9, 0.3, 0.7]
    assert df["object_p_noctiluca"].astype(float).tolist() == [0.0, 0.0, 0.2]
    assert df["object_id"].tolist() == ["st_1_000001", "st_1_000002", "st_1_000003"]
    assert df["acq_instrument"].tolist() == ["FlowCam"] * 3
    typed = dict(zip(df.columns, types, strict=True))
    assert (
        typed["object_p_copepoda"] == "[f]"
        and typed["sample_cruise"] == "[t]"
        and typed["acq_volume"] == "[t]"
    )
    assert ecotaxa.class_probability(pred, "Noctiluca", 1).tolist() == [0.0, 0.0, 0.0]  # not in the top 1
    settings["metadata"] = {"sample_id": "S9", "acq_id": "A9"}
    ecotaxa.export(tmp_path / "p.parquet", tmp_path / "e.tsv", settings)
    df, _ = ecotaxa.read_tsv(tmp_path / "e.tsv")
    assert (df["sample_id"].iloc[0], df["acq_id"].iloc[0]) == ("S9", "A9") and "sample_sample_id" not in df


def test_table_columns_values_and_crops():
    """Internal columns stay out, the top-k columns stop at k, crops become PNGs (a crop width of 0
    or NaN means the whole file), scores keep 6 decimals, run and model ids go to process_*."""
    pred = pd.DataFrame(
        {
            "seq": [0, 1, 2],
            "id": ["h0", "h1", "h2"],
            "source": ["a.jpg", "b.tif", "c.JPG"],
            "model_id": ["m", "m", "m"],
            "run_id": ["r", "r", "r"],
            "embedding": [[0.1], [0.2], [0.3]],
            "crop_x": [1, 0, 0],
            "crop_y": [2, 0, 0],
            "crop_w": [5, np.nan, 0],
            "crop_h": [6, 0, 0],
            "top1_label": ["x", "y", "x"],
            "top1_prob": [0.1234567, 0.5, 0.25],
            "top2_label": ["y", "x", "y"],
            "top2_prob": [0.1, 0.2, 0.3],
            "top3_label": ["z", "z", "z"],
            "top3_prob": [0.01, 0.01, 0.01],
            "Area (mm²)": [1.5, 2.5, 3.5],
        }
    )
    df = ecotaxa.table(pred, 2, CFG, "UVP")
    assert list(df.columns) == [
        "img_file_name", "object_id", "object_annotation_category", "object_annotation_status",
        "object_sha256", "object_score_top1", "object_pred_top2", "object_score_top2", "object_area_mm",
        "sample_id", "acq_id", "acq_instrument", "process_id", "process_model_id",
    ]  # fmt: skip
    assert df["img_file_name"].tolist() == [
        "images/s1_000001.png",
        "images/s1_000002.png",
        "images/s1_000003.jpg",
    ]
    assert df["object_score_top1"].tolist() == [0.123457, 0.5, 0.25]
    assert (
        df["object_pred_top2"].tolist() == ["y", "x", "y"]
        and df["object_annotation_status"].eq("predicted").all()
    )
    assert df["process_id"].tolist() == ["r"] * 3 and df["process_model_id"].tolist() == ["m"] * 3
    assert df["object_sha256"].tolist() == ["h0", "h1", "h2"] and df["object_area_mm"].tolist() == [
        1.5,
        2.5,
        3.5,
    ]
    bare = ecotaxa.table(pred.drop(columns=["model_id", "run_id", "crop_w", "top2_label"]), 3, CFG, "UVP")
    assert bare["process_id"].eq("").all() and bare["process_model_id"].eq("").all()
    assert "object_pred_top2" not in bare and "object_score_top2" not in bare  # top-k stops at a gap
    assert bare["img_file_name"].tolist() == [
        "images/s1_000001.jpg",
        "images/s1_000002.png",
        "images/s1_000003.jpg",
    ]


def _jpeg_with_gps(path: Path) -> Path:
    """A camera-like JPEG: EXIF with GPS position, make and orientation, plus an XMP packet."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "DeepCam"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to view
    exif[0x8825] = {1: "N", 2: (43.0, 41.0, 12.5), 3: "E", 4: (7.0, 18.0, 3.25)}  # GPS IFD
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>43,41.2N</exif:GPSLatitude></x:xmpmeta>'
    img = np.zeros((24, 32, 3), np.uint8)
    img[4:12, 6:20] = (200, 30, 90)
    Image.fromarray(img).save(path, exif=exif, xmp=xmp, quality=92)
    return path


def test_bundle_jpegs_lose_their_gps_exif_but_not_their_pixels_or_orientation(tmp_path):
    from PIL import Image

    src = _jpeg_with_gps(tmp_path / "frame.jpg")
    with Image.open(src) as im:
        assert im.getexif().get_ifd(0x8825) and b"GPSLatitude" in src.read_bytes()
    pred = predictions(pd.DataFrame({"seq": [0], "source": [str(src)]}))
    ecotaxa.write_tsv(ecotaxa.table(pred, 2, CFG, "UVP"), tmp_path / "e.tsv")
    ecotaxa.write_bundle(pred, tmp_path / "e.tsv", tmp_path / "s.zip")  # default: export.strip_exif true
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        shipped = zf.read("images/" + ecotaxa.object_ids(pred, "s1")[0] + ".jpg")
    with Image.open(io.BytesIO(shipped)) as im:
        exif = im.getexif()
        assert not exif.get_ifd(0x8825) and 0x010F not in exif and "xmp" not in im.info
        assert exif[0x0112] == 6  # still shown upright
    assert b"GPSLatitude" not in shipped and b"DeepCam" not in shipped
    # the compressed image data is copied byte for byte: the same pixels, the same scan data
    assert np.array_equal(imaging.decode(shipped).image, imaging.decode(src.read_bytes()).image)
    sos = src.read_bytes().index(b"\xff\xda")
    assert shipped.endswith(src.read_bytes()[sos:])
    ecotaxa.write_bundle(pred, tmp_path / "e.tsv", tmp_path / "k.zip", strip=False)
    with zipfile.ZipFile(tmp_path / "k.zip") as zf:  # export.strip_exif: false ships the original
        assert [zf.read(n) for n in zf.namelist() if n.startswith("images/")] == [src.read_bytes()]


def test_the_local_path_in_hex_is_not_exported(tmp_path):
    pred = predictions(pd.DataFrame({"seq": [0, 1], "source": ["/home/alice/caf\\xe9.png", "b.png"]}))
    pred["source_hex"] = [b"/home/alice/caf\xe9.png".hex(), ""]
    df = ecotaxa.table(pred, 2, CFG, "FlowCam")
    assert not [c for c in df.columns if "source" in c]
    assert "alice" not in df.to_csv() and b"alice".hex() not in df.to_csv()


def test_a_campaign_of_three_samples_imports_as_three_samples(tmp_path):
    """Each object's sample comes from the campaign's sample column; the samples table gives its
    position, depth and date; an object of a sample the table lacks is an error naming it."""
    pred = predictions(pd.DataFrame({"seq": range(6), "source": [f"{i}.png" for i in range(6)]}))
    pred["station"] = ["S1", "S2", "S3", "S1", "S2", "S3"]
    pred.to_parquet(tmp_path / "p.parquet")
    (tmp_path / "samples.csv").write_text(
        "eventID,eventDate,decimalLatitude,decimalLongitude,minimumDepthInMeters,maximumDepthInMeters\n"
        "S1,2024-05-08T10:30:00Z,51.1,2.1,3,5\n"
        "S2,2024-05-09T11:00Z,51.2,2.2,0,10\n"
        "S3,2024-05-10,51.3,2.3,,\n"
    )
    settings = {
        "metadata": {"acq_id": "flowcam"},
        "default_sample_id": "uc_campaign",
        "sample_column": "station",
        "top_k": 1,
        "instrument": "FlowCam",
    }
    assert ecotaxa.export(tmp_path / "p.parquet", tmp_path / "e.tsv", settings, tmp_path / "samples.csv") == 6
    df, types = ecotaxa.read_tsv(tmp_path / "e.tsv")
    assert df["sample_id"].tolist() == ["S1", "S2", "S3"] * 2 and df["sample_id"].nunique() == 3
    assert df["acq_id"].tolist() == ["S1_flowcam", "S2_flowcam", "S3_flowcam"] * 2  # one per sample
    assert df["object_lat"].astype(float).tolist() == [51.1, 51.2, 51.3] * 2
    assert df["object_date"].tolist() == ["20240508", "20240509", "20240510"] * 2
    assert df["object_time"].tolist() == ["103000", "110000", ""] * 2
    assert df["object_depth_max"].tolist() == ["5", "10", ""] * 2
    typed = dict(zip(df.columns, types, strict=True))
    assert typed["object_lat"] == "[f]" and typed["object_date"] == "[t]" and typed["sample_id"] == "[t]"
    assert len(reimport(tmp_path / "e.tsv")) == 6  # the importer's rules hold
    pred.assign(station="S4").to_parquet(tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"\['S4'\] have no row \(eventID\) in the samples table"):
        ecotaxa.export(tmp_path / "p.parquet", tmp_path / "e.tsv", settings, tmp_path / "samples.csv")
    # without a samples table, the one campaign sample of metadata as before
    pred.drop(columns="station").to_parquet(tmp_path / "p.parquet")
    ecotaxa.export(tmp_path / "p.parquet", tmp_path / "e.tsv", settings)
    df, _ = ecotaxa.read_tsv(tmp_path / "e.tsv")
    assert set(df["sample_id"]) == {"uc_campaign"} and set(df["acq_id"]) == {"flowcam"}

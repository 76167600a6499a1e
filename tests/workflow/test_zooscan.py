"""ZooScan (UC2) end to end on synthetic scans: blanks -> segmentation -> multiple score ->
separation of the multiple vignettes -> multiple classifier -> EcoTaxa with parent ids."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from aquaflow.standards import ecotaxa
from aquaflow.synthetic import zooscan as zs
from tests.conftest import REPO, run_snakemake, write_workdir

pytestmark = pytest.mark.workflow

FEATURES = [
    "object_area",
    "object_esd",
    "object_major",
    "object_minor",
    "object_perim.",
    "object_mean",
    "object_circ.",
]


def zooscan_usecase(data) -> dict:
    uc = yaml.safe_load((REPO / "config/usecases/zooscan.yaml").read_text())
    uc["source"] = {"kind": "path", "path": str(data)}
    uc["model"].update({"arch": "lcnet_050", "input_size": 64})
    uc["training"].update({"epochs": 3, "batch_size": 32, "lr": 0.003, "early_stopping": {"patience": 0}})
    uc["preprocess"]["segment"]["strip_rows"] = 256  # several strips per scan
    # the committed example sample table names scan01..scan03, as write_dataset(n_scans=3) does
    uc["campaigns"]["scans"]["samples"]["path"] = str(REPO / "config/samples/zooscan_synthetic.csv")
    uc["export"]["dwca"]["taxonomy"] = str(REPO / "config/taxonomy/zooscan.tsv")
    return uc


@pytest.fixture(scope="module")
def zooscan_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zooscan")
    truth = zs.write_dataset(
        tmp / "data", n_scans=3, height=1200, width=1600, n_single=28, n_pairs=14, seed=11
    )
    wd = write_workdir(tmp / "wd", {"zooscan": zooscan_usecase(tmp / "data")})
    t0 = time.perf_counter()
    run_snakemake(wd, "--report", "report.html", "--report-after-run")  # the report: one run, not two
    return wd, truth, time.perf_counter() - t0


def test_every_object_is_segmented_and_measured(zooscan_run):
    wd, truth, seconds = zooscan_run
    pre = wd / "results/zooscan/preprocessed"
    items = pd.read_parquet(pre / "items.parquet")
    cut = pd.read_parquet(pre / "separated.parquet")
    # one segmented object per truth blob (dust and scratches removed by the blank), per scan
    table = pd.read_csv(pre / "separation.tsv", sep="\t").set_index("image")
    assert table["segmented"].to_dict() == truth.groupby("scan").size().to_dict()
    # the multiple ones are replaced by their parts: items = whole objects left + parts
    assert table["objects"].to_dict() == items.groupby("image").size().to_dict()
    assert (table["objects"] == table["segmented"] - table["separated"] + table["parts"]).all()
    # segmented objects = the items that are not parts + the cut ones (measured before the cut)
    items = pd.concat([items[items["object_parent_id"] == ""], cut], ignore_index=True)
    assert items.groupby("image").size().to_dict() == truth.groupby("scan").size().to_dict()
    # areas in mm² agree with the truth within 10 % each (Otsu threshold, soft edges)
    mm2 = (zs.PIXEL_SIZE_UM / 1000) ** 2
    for scan, objs in items.groupby("image"):
        t = truth[truth["scan"] == scan]
        for row in t.itertuples():
            hit = objs[
                (objs["bbox_x0"] <= row.x)
                & (row.x < objs["bbox_x1"])
                & (objs["bbox_y0"] <= row.y)
                & (row.y < objs["bbox_y1"])
            ]
            assert len(hit) >= 1
            best = hit.iloc[(hit["area_px"] - row.area_px).abs().argmin()]
            assert best["object_area"] == pytest.approx(row.area_px * mm2, rel=0.10)
    # training folders: labels from the organism points, single and multiple as in the truth
    n_multi = len(list((wd / "results/zooscan/preprocessed/train/multiple").glob("*.png")))
    n_single = len(list((wd / "results/zooscan/preprocessed/train/single").glob("*.png")))
    assert (n_multi, n_single) == ((truth["label"] == "multiple").sum(), (truth["label"] == "single").sum())
    steps = pd.read_csv(wd / "results/zooscan/preprocessed/steps.tsv", sep="\t")
    assert steps["step"].tolist() == ["background", "segment", "separate"]
    for fig in ("before_after", "examples"):
        assert (wd / f"results/zooscan/preprocess/{fig}.png").stat().st_size > 1000
    print(f"zooscan workflow: {seconds:.0f} s")


def test_ecotaxa_tsv_has_features_category_and_multiple_score(zooscan_run):
    wd, truth, _ = zooscan_run
    tsv = wd / "results/zooscan/campaigns/scans/export/ecotaxa_zooscan_scans.tsv"
    header = tsv.read_text(encoding="utf-8-sig").splitlines()[:2]
    cols, types = header[0].split("\t"), header[1].split("\t")
    assert len(cols) == len(types) and set(types) <= {"[t]", "[f]"}
    typ = dict(zip(cols, types, strict=True))
    for f in [*FEATURES, "object_p_multiple", "object_score_top1", "object_multiple_score"]:
        assert typ[f] == "[f]", f
    assert typ["object_annotation_category"] == typ["object_parent_id"] == "[t]"
    df, _ = ecotaxa.read_tsv(tsv)
    # one EcoTaxa object per organism found: the separated parts, not the vignettes they came from
    items = pd.read_parquet(wd / "results/zooscan/preprocessed/items.parquet").set_index("object_name")
    cut = pd.read_parquet(wd / "results/zooscan/preprocessed/separated.parquet")
    assert len(df) == len(items) == len(truth) - len(cut) + cut["n_parts"].sum()
    n_organisms = truth["n_organisms"].sum()
    assert abs(len(df) - n_organisms) <= 0.25 * (n_organisms - len(truth))  # count error cut by >= 4x
    parts = df[df["object_parent_id"] != ""]
    assert len(parts) == cut["n_parts"].sum() and set(parts["object_parent_id"]) == set(cut["object_name"])
    assert set(df["object_id"]).isdisjoint(cut["object_name"])
    assert df["object_multiple_score"].astype(float).between(0, 1).all()
    assert set(df["object_annotation_category"]) <= {"single", "multiple"}
    assert (df["object_annotation_status"] == "predicted").all()
    p = df["object_p_multiple"].astype(float)
    assert p.between(0, 1).all()
    # the category is the arg-max of the two probabilities
    assert ((p > 0.5) == (df["object_annotation_category"] == "multiple")).all()
    # ZooProcess conventions: <scan_id>_<item> ids, areas in pixels, lengths in pixels
    assert df["object_id"].is_unique and set(df["object_id"]) == set(items.index)
    assert (df["img_file_name"] == df["object_id"] + ".png").all()
    obj = items.loc[df["object_id"]]
    assert (df["object_area"].astype(int).to_numpy() == obj["area_px"].to_numpy()).all()
    px = zs.PIXEL_SIZE_UM / 1000
    assert np.allclose(df["object_major"].astype(float), obj["object_major"] / px, atol=1e-3)
    # the object pixel size travels with the objects (ZooProcess process_particle_pixel_size_mm)
    assert np.allclose(df["process_particle_pixel_size_mm"].astype(float), zs.PIXEL_SIZE_UM / 1000)


def test_report_has_vignettes_and_before_after(zooscan_run):
    wd, _, _ = zooscan_run
    html = (wd / "report.html").read_text()
    assert "before_after.png" in html and "examples.png" in html
    assert "blank scan(s) subtracted" in html
    # objects per scan and size spectra before / after separation
    assert "separation.png" in html and "touching organisms separated" in html
    assert (wd / "results/zooscan/preprocess/separation.png").stat().st_size > 5000


def test_dwca_counts_and_biovolume_per_scan(zooscan_run):
    """One event per scan; `single` objects are Biota occurrences whose counts equal the predictions;
    biovolume per m³ from the pixel areas, the pixel size and the sample volume."""
    from dwca.read import DwCAReader

    from aquaflow.standards import dwca

    wd, _, _ = zooscan_run
    res = wd / "results/zooscan/campaigns/scans"
    pred = pd.read_parquet(res / "predictions.parquet")
    samples = pd.read_csv(REPO / "config/samples/zooscan_synthetic.csv").set_index("eventID")
    with DwCAReader(str(res / "export/dwca_zooscan_scans.zip")) as dw:
        assert sorted(row.id for row in dw) == sorted(set(pred["image"]))
        occ = dw.pd_read("occurrence.txt", dtype=str, keep_default_na=False)
        emof = dw.pd_read("extendedmeasurementorfact.txt", dtype=str, keep_default_na=False)
    assert set(occ["scientificName"]) <= {"Biota"}
    report = json.loads((res / "export/dwca_zooscan_scans.json").read_text())
    assert report["excluded_not_a_taxon"] == ["multiple"]
    singles = pred[pred["top1_label"] == "single"]
    for scan, objs in singles.groupby("image"):
        rows = emof[emof["occurrenceID"] == f"{scan}_P_1"]
        value = dict(zip(rows["measurementTypeID"], rows["measurementValue"], strict=True))
        assert int(value[dwca.COUNT[1]]) == len(objs)
        vol = samples.loc[scan, "sampleSizeValue"]  # m³
        r_mm = np.sqrt(objs["area_px"] * (zs.PIXEL_SIZE_UM / 1000) ** 2 / np.pi)
        expect = float((4 / 3 * np.pi * r_mm**3).sum()) / vol
        assert float(value[dwca.BIOVOLUME[1]]) == pytest.approx(expect, rel=1e-5)
        assert float(value[dwca.ABUNDANCE[1]]) == pytest.approx(len(objs) / vol, rel=1e-5)

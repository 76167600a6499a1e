import zipfile

import numpy as np
import pandas as pd

from aquaflow import ecotaxa, imaging
from aquaflow.flowcam import list_run
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

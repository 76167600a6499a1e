"""ZooScan "multiple" vignettes: generated touching groups with known instance masks, the geometric
multiple score and the classical separator (distance transform + marker-controlled watershed)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from aquaflow.preprocess import background as bg
from aquaflow.preprocess import pipeline
from aquaflow.preprocess import segment as seg
from aquaflow.preprocess import separate as sep
from aquaflow.synthetic import zooscan as zs

PAD = 8


def test_default_scene_is_the_one_drawn_before_groups_existed():
    """Golden figures of make_scene(900, 1200, 10, 5, seed=0) measured on the generator before
    n_triples / overlap_px were added: existing data sets and tests see the same scans."""
    scene, orgs, blobs = zs.make_scene(900, 1200, 10, 5, seed=0)
    assert int(orgs["area_px"].sum()) == 32488
    assert float(orgs["x"].sum()) == pytest.approx(10325.369998, abs=1e-5)
    assert int(blobs[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].to_numpy().sum()) == 28141
    assert len(scene.dust) == 167


def test_groups_have_known_instance_masks(tmp_path):
    scene, orgs, blobs = zs.make_scene(900, 1200, 4, 3, seed=2, n_triples=3, overlap_px=20)
    assert blobs["n_organisms"].value_counts().to_dict() == {1: 4, 2: 3, 3: 3}
    assert (blobs["label"] == "multiple").sum() == 6
    inst = zs.instances(scene)
    assert len(inst) == len(orgs) == 4 + 2 * 3 + 3 * 3
    assert np.allclose(inst["esd_px"], 2 * np.sqrt(inst["area_px"] / math.pi))
    organisms = zs.organisms_of(inst)
    for blob in blobs.itertuples():
        box = (blob.bbox_x0, blob.bbox_y0, blob.bbox_x1, blob.bbox_y1)
        members = [o for o in organisms if o.blob == blob.blob]
        masks = [o.mask(box) for o in members]
        union = np.logical_or.reduce(masks)
        assert int(union.sum()) == blob.area_px  # the blob is the union of its organisms
        if len(members) > 1:  # the group overlaps by at least overlap_px pixels
            assert sum(int(m.sum()) for m in masks) - int(union.sum()) >= 20
            assert ndimage.label(union, np.ones((3, 3)))[1] == 1  # and is one connected object
    for row, o in zip(inst.itertuples(), organisms, strict=True):  # round trip of the masks
        box = (row.bbox_x0, row.bbox_y0, row.bbox_x1, row.bbox_y1)
        assert int(o.mask(box).sum()) == row.area_px
    out = zs.write_scan(tmp_path, "s1", scene, orgs, blobs, n_blanks=1, with_instances=True)
    back = zs.organisms_of(zs.pd.read_csv(out["instances"]))
    assert [o.mask((0, 0, 1200, 900)).sum() for o in back] == [
        o.mask((0, 0, 1200, 900)).sum() for o in organisms
    ]


def _discs(centres: list[tuple[int, int]], r: int, shape=(80, 120)) -> tuple[np.ndarray, list[np.ndarray]]:
    truth = []
    for cx, cy in centres:
        m = np.zeros(shape, np.uint8)
        cv2.circle(m, (cx, cy), r, 1, -1)
        truth.append(m.astype(bool))
    return np.logical_or.reduce(truth), truth


def test_two_touching_discs_are_cut_on_their_neck():
    mask, truth = _discs([(40, 40), (75, 40)], 18)  # 1 - 35 / 36: a narrow neck
    params = sep.SeparateParams()
    labels = sep.split(mask, params)
    assert labels.max() == 2
    lines = sep.separation_lines(labels)
    assert lines.any() and not (lines & ~mask).any()
    assert lines.sum() < 20  # a short cut across the neck, not an outline
    # the parts are apart in 8-connectivity once the line is removed (what ZooProcess re-imports)
    assert ndimage.label(mask & ~lines, np.ones((3, 3)))[1] == 2
    assert sep.recovered(truth, [labels == 1, labels == 2]) == (2, 2)
    vig = np.where(mask, 100, 255).astype(np.uint8)
    res = sep.separate(vig, mask, (1000, 2000), 10.0, params, PAD)
    assert len(res.parts) == 2 and len(res.vignettes) == len(res.masks) == 2
    assert res.parts["area_px"].sum() + lines.sum() == mask.sum()
    # scan coordinates: the parts' boxes are offset by the vignette's origin, left part first
    left = res.parts.sort_values("bbox_x0").iloc[0]
    assert (left["bbox_x0"], left["bbox_y0"]) == (1000 + 22, 2000 + 22)
    assert left["object_esd"] == pytest.approx(2 * math.sqrt(left["area_px"] / math.pi) * 0.01)
    for v, m in zip(res.vignettes, res.masks, strict=True):
        assert v.shape == m.shape and (v[m] == 100).all()
        assert (v[~m] == 255).all()  # the other part and the cut are white


def test_a_single_object_stays_whole_and_scores_low():
    mask, _ = _discs([(60, 40)], 25)
    params = sep.SeparateParams()
    assert sep.split(mask, params).max() == 1
    assert not sep.separation_lines(sep.split(mask, params)).any()
    assert sep.multiple_score(0.97, params) < 0.02 < 0.98 < sep.multiple_score(0.78, params)
    assert sep.multiple_score(params.solidity_midpoint, params) == pytest.approx(0.5)


def test_generated_groups_are_recovered():
    """Touching pairs and triples on a rendered scan: segmented as one object each, scored multiple
    and cut so that most organisms are recovered (IoU >= 0.5)."""
    scene, _, blobs = zs.make_scene(800, 1200, 6, 5, seed=5, n_triples=2, dust_per_mp=0, scratches_per_mp=0)
    scan, blanks = zs.render(scene, 1)
    image = bg.subtract(scan, blanks[0], "difference")
    params = seg.SegmentParams(pixel_size_um=zs.PIXEL_SIZE_UM, threshold="otsu", min_area_um2=10000)
    labels, objects = seg.segment(image, params)
    assert len(objects) == len(blobs)
    p = sep.SeparateParams()
    organisms = zs.organisms_of(zs.instances(scene))
    n_truth = n_found = n_parts = n_good = 0
    for row in objects.to_dict("records"):
        box = (row["bbox_x0"], row["bbox_y0"], row["bbox_x1"], row["bbox_y1"])
        own = seg.vignette(labels, box, PAD, 0) == row["label_id"]
        origin = (row["bbox_x0"] - PAD, row["bbox_y0"] - PAD)
        window = (*origin, origin[0] + own.shape[1], origin[1] + own.shape[0])
        truth = [o.mask(window) & own for o in organisms]
        truth = [t for t in truth if t.sum() > 100]
        multiple = sep.multiple_score(row["object_solidity"], p) >= p.threshold
        assert multiple == (len(truth) > 1)  # the geometric score flags exactly the groups
        if not multiple:  # only vignettes scored multiple are cut (a head on a body is a neck too)
            continue
        res = sep.separate(seg.vignette(image, box, PAD, 255), own, origin, zs.PIXEL_SIZE_UM, p, PAD)
        lab = sep.split(own, p)
        assert len(res.parts) == lab.max() and res.lines.any() == (lab.max() > 1)
        parts = [lab == k for k in range(1, lab.max() + 1)]
        found, good = sep.recovered(truth, parts)
        n_truth, n_found, n_parts, n_good = (
            n_truth + len(truth),
            n_found + found,
            n_parts + len(parts),
            n_good + good,
        )
    assert n_truth == 5 * 2 + 2 * 3
    assert n_found / n_truth >= 0.75  # recall of the organisms in groups
    assert n_good / n_parts >= 0.85  # precision of the parts


def test_pipeline_replaces_multiples_by_their_parts(tmp_path):
    """The ZooScan use case's preprocess steps (background, segment, separate) on generated scans:
    counts per scan move from the segmented objects to the organisms, parts name their parent, the
    line images are ZooProcess-style binary masks, and the training folder keeps whole objects."""
    from tests.unit.test_preprocess_pipeline import usecase

    truth = zs.write_dataset(
        tmp_path / "raw", n_scans=1, height=800, width=1200, n_single=6, n_pairs=4, seed=7
    )
    cfg = usecase("zooscan")["preprocess"]
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    steps = pipeline.run(tmp_path / "raw", cfg, tmp_path / "out", figs)
    out = tmp_path / "out"
    items = pd.read_parquet(out / "items.parquet")
    table = pd.read_csv(out / "separation.tsv", sep="\t")
    cut = pd.read_parquet(out / "separated.parquet")
    assert table.to_dict("records") == [
        {
            "image": "scan01",
            "segmented": len(truth),
            "separated": len(cut),
            "parts": int(cut["n_parts"].sum()),
            "objects": len(items),
        }
    ]
    assert steps.set_index("step")["items_out"].to_dict() == {
        "background": 1,
        "segment": 10,
        "separate": len(items),
    }
    assert len(items) == len(truth) - len(cut) + cut["n_parts"].sum()
    assert abs(len(items) - truth["n_organisms"].sum()) < abs(len(truth) - truth["n_organisms"].sum())
    assert (cut["object_multiple_score"] >= 0.5).all() and len(cut) >= 3  # most of the 4 pairs
    parts = items[items["object_parent_id"] != ""]
    assert set(parts["object_parent_id"]) == set(cut["object_name"])
    assert not set(cut["object_name"]) & set(items["object_name"])  # a cut object is replaced
    assert (parts["object_name"].str.rsplit("_", n=1).str[0] == parts["object_parent_id"]).all()
    assert items["object_multiple_score"].between(0, 1).all()
    for row in cut.itertuples():
        lines = cv2.imread(str(out / row.lines), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(lines)) == {0, 255}
        ours = parts[parts["object_parent_id"] == row.object_name]
        assert len(ours) == row.n_parts
        # the parts' pixels plus the cut make the parent's pixels
        assert ours["area_px"].sum() + (lines > 0).sum() == row.area_px
        assert ((ours["bbox_x0"] >= row.bbox_x0) & (ours["bbox_x1"] <= row.bbox_x1)).all()
    for p in parts["path"]:
        assert p.startswith("unlabelled/") and (out / p).is_file()
    # the training folder keeps every object as segmented (what a multiple classifier learns from)
    labelled = sorted(q.name for q in (out / "train").rglob("*.png"))
    assert len(labelled) == len(truth)


def test_separate_must_follow_segment(tmp_path):
    from tests.unit.test_preprocess_pipeline import usecase

    (tmp_path / "raw").mkdir()
    cv2.imwrite(str(tmp_path / "raw" / "a.png"), np.full((32, 32), 255, np.uint8))
    cfg = usecase("zooscan")["preprocess"] | {"steps": ["background", "separate"], "images": "*.png"}
    cfg["background"] = cfg["background"] | {"blanks": None}
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    with pytest.raises(ValueError, match="`separate` must directly follow `segment`"):
        pipeline.run(tmp_path / "raw", cfg, tmp_path / "out", figs)
    # a model switched on without its folder stops before any job, naming both keys
    from aquaflow.config import ConfigError, check_usecase

    uc = usecase("zooscan")
    uc["preprocess"]["separate"] |= {"score": "model"}
    with pytest.raises(
        ConfigError,
        match=r"'preprocess\.separate\.score: model' needs .* 'preprocess\.separate\.score_model'",
    ):
        check_usecase(uc, "zooscan")
    check_usecase(usecase("zooscan"), "zooscan")
    # the config section's units: the minimum part area is given in µm² and used in pixels
    p = sep.params_of(cfg["separate"], 10.0)
    assert p.min_part_px == 30 and p.threshold == 0.5 and p.neck_ratio == 0.8


def test_before_after_counts_and_sizes_feed_the_report_figure(tmp_path):
    from aquaflow import plots
    from tests.unit.test_preprocess_pipeline import usecase

    truth = zs.write_dataset(
        tmp_path / "raw", n_scans=2, height=700, width=900, n_single=5, n_pairs=3, seed=4
    )
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    pipeline.run(tmp_path / "raw", usecase("zooscan")["preprocess"], tmp_path / "out", figs)
    counts, sizes = sep.before_after(tmp_path / "out")
    assert counts["before"].to_dict() == truth.groupby("scan").size().to_dict()
    items = pd.read_parquet(tmp_path / "out/items.parquet")
    assert counts["after"].to_dict() == items.groupby("image").size().to_dict()
    per_stage = sizes.groupby(["sample", "stage"]).size().unstack()
    assert per_stage["before"].to_dict() == counts["before"].to_dict()
    assert per_stage["after"].to_dict() == counts["after"].to_dict()
    # cutting moves sizes down: the largest ESD before is not exceeded after
    assert (
        sizes.loc[sizes["stage"] == "after", "size"].max()
        <= sizes.loc[sizes["stage"] == "before", "size"].max()
    )
    plots.before_after_counts(counts, sizes, tmp_path / "sep.png")
    assert cv2.imread(str(tmp_path / "sep.png")).shape[1] > 800


def test_instance_masks_become_parts_and_lines():
    """Model-based separation's second half, fed with the true instance masks (an oracle model):
    overlapping instances are split on the distance ridge, a part no instance covered is added back."""
    mask, truth = _discs([(30, 40), (62, 40), (95, 40)], 16)
    labels = sep.split_from_instances(mask, truth[:2], min_part_px=30)  # the model missed the third
    assert labels.max() == 3 and not (labels[mask] == 0).any() and not labels[~mask].any()
    parts = [labels == k for k in range(1, 4)]
    assert sep.recovered(truth, parts) == (3, 3)
    lines = sep.separation_lines(labels)
    assert ndimage.label(mask & ~lines, np.ones((3, 3)))[1] == 3
    # instances overlapping each other (as a model's masks do) still give disjoint parts
    grown = [ndimage.binary_dilation(t, iterations=4) for t in truth]
    labels = sep.split_from_instances(mask, grown, min_part_px=30)
    assert labels.max() == 3 and sep.recovered(truth, [labels == k for k in range(1, 4)]) == (3, 3)
    assert sep.split_from_instances(mask, [], 30).max() == 1  # no instance: the object stays whole


def test_an_ultralytics_segment_model_separates(tmp_path):
    """Model-based separation through the engine's Ultralytics segment backend: a given model folder
    (card task segment; here an untrained YOLO11n-seg with a hand-set head, no training) yields the
    instance masks, they become the parts (split_from_instances) and their lines, in `separate` and
    in the preprocess step, whose parts name their parent."""
    from aquaflow.backends import load_instance_separator
    from aquaflow.io import read_json, write_json
    from aquaflow.models.artifacts import ModelCardError
    from tests.detect_models import seeded_head_model
    from tests.unit.test_preprocess_pipeline import usecase

    folder = seeded_head_model(tmp_path / "models" / "seg", "segment", ["organism"])
    model = load_instance_separator(folder, 0.5)
    mask, _ = _discs([(40, 40), (75, 40)], 18)
    vig = np.where(mask, 100, 255).astype(np.uint8)
    instances = model(vig)
    assert len(instances) >= 2 and all(m.shape == mask.shape and m.dtype == bool for m in instances)
    expected = sep.split_from_instances(mask, instances, 30)
    res = sep.separate(vig, mask, (0, 0), 10.0, sep.SeparateParams(), PAD, instances)
    assert len(res.parts) == expected.max() >= 2  # the model's masks, not the watershed's markers
    assert (res.lines == sep.separation_lines(expected)).all()
    assert res.parts["area_px"].sum() + res.lines.sum() == mask.sum()
    # the preprocess step with the model as its separator (as scripts/preprocess.py loads it)
    zs.write_dataset(tmp_path / "raw", n_scans=1, height=400, width=600, n_single=2, n_pairs=2, seed=7)
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    pipeline.run(tmp_path / "raw", usecase("zooscan")["preprocess"], tmp_path / "out", figs, model)
    items = pd.read_parquet(tmp_path / "out/items.parquet")
    cut = pd.read_parquet(tmp_path / "out/separated.parquet")
    assert len(cut) >= 1
    for row in cut.itertuples():
        ours = items[items["object_parent_id"] == row.object_name]
        assert len(ours) == row.n_parts >= 2
        lines = cv2.imread(str(tmp_path / "out" / row.lines), cv2.IMREAD_GRAYSCALE)
        assert ours["area_px"].sum() + (lines > 0).sum() == row.area_px
    # what is not a separator model is refused, naming it
    (tmp_path / "cls").mkdir()
    write_json({**read_json(folder / "model_card.json"), "task": "detect"}, tmp_path / "cls/model_card.json")
    (tmp_path / "cls/model.pt").write_bytes((folder / "model.pt").read_bytes())
    with pytest.raises(ModelCardError, match="Ultralytics segment model"):
        load_instance_separator(tmp_path / "cls", 0.5)
    with pytest.raises(FileNotFoundError, match="neither a model folder"):
        load_instance_separator(tmp_path / "raw", 0.5)


def test_a_classification_model_scores_multiples(tmp_path):
    """The Multiple Classifier as a model: a given classification model folder (card task classify,
    classes single / multiple; here an untrained timm net) gives each vignette its P(multiple), which
    becomes `object_multiple_score` of every object and part in the preprocess step."""
    import timm
    import torch

    from aquaflow.backends import torch_model
    from aquaflow.backends.scorer import MultipleScorer
    from aquaflow.io import write_json
    from aquaflow.models.artifacts import ModelCardError
    from tests.unit.test_preprocess_pipeline import usecase

    def folder(name: str, classes: list[str]):
        torch.manual_seed(0)
        (tmp_path / name).mkdir()
        torch_model.save_weights(
            timm.create_model("resnet10t", num_classes=len(classes)), tmp_path / name / "model.safetensors"
        )
        card = {
            "format": "safetensors",
            "weights": "model.safetensors",
            "arch": "resnet10t",
            "classes": classes,
        }
        card |= {"input_size": 32, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
        write_json(card, tmp_path / name / "model_card.json")
        return tmp_path / name

    scorer = MultipleScorer(folder("cls", ["multiple", "single"]))
    zs.write_dataset(tmp_path / "raw", n_scans=1, height=400, width=600, n_single=2, n_pairs=2, seed=7)
    cfg = usecase("zooscan")["preprocess"]
    cfg["separate"] = cfg["separate"] | {"threshold": 0.0}  # every object goes to the separator
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    pipeline.run(tmp_path / "raw", cfg, tmp_path / "out", figs, scorer=scorer)
    items = pd.read_parquet(tmp_path / "out/items.parquet")
    assert len(items) >= 4
    for row in items.itertuples():  # each object's score is the model's P(multiple) of its vignette
        vig = cv2.imread(str(tmp_path / "out" / row.path), cv2.IMREAD_GRAYSCALE)
        assert row.object_multiple_score == pytest.approx(scorer(vig), abs=1e-5)
    assert items["object_multiple_score"].nunique() > 1  # not the geometric score's constant shape
    with pytest.raises(ModelCardError, match="class 'multiple'"):
        MultipleScorer(folder("other", ["a", "b"]))

"""Semantic segmentation library: FSS against pysteps, IoU/Dice, rasters (statistics, nodata,
vector labels), blended tiles equal to a whole-image prediction, georeferenced outputs read back."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from pysteps.verification.spatialscores import fss as pysteps_fss
from pysteps.verification.spatialscores import fss_accum, fss_compute, fss_init

from aquaflow.data import rasters
from aquaflow.engine.semantic import predict_raster, score_raster
from aquaflow.tasks.semantic import metrics, outputs
from aquaflow.tasks.semantic.tiling import Tiling, predict_blocks

CRS = "EPSG:32631"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)  # 10 m pixels


def write_raster(path, data: np.ndarray, nodata=None, dtype="float32") -> None:
    data = data[None] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": dtype,
        "crs": CRS,
        "transform": TRANSFORM,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype))


@pytest.mark.parametrize("scale", [1, 2, 5, 11])
def test_fss_equals_pysteps_on_random_fields(scale: int) -> None:
    rng = np.random.default_rng(scale)
    f, o = rng.random((60, 75)), rng.random((60, 75))
    ours = metrics.fss(f >= 0.7, o >= 0.7, scale)
    assert ours == pytest.approx(pysteps_fss(f, o, 0.7, scale), abs=1e-9)
    # accumulated over several fields (a campaign of rasters): the same sums as pysteps'
    acc, ref = metrics.FSS([scale]), fss_init(0.6, scale)
    for _ in range(3):
        f, o = rng.random((40, 50)), rng.random((40, 50))
        acc.add(f >= 0.6, o >= 0.6)
        fss_accum(ref, f, o)
    assert acc.values()[scale] == pytest.approx(fss_compute(ref), abs=1e-9)


def test_iou_dice_accuracy_from_known_counts() -> None:
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, rasters.NODATA_LABEL]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1]], np.uint8)
    s = metrics.SemanticScores(["sea", "oil"], [1], ["oil"])
    s.add(truth, pred)
    r = s.result()
    assert r["confusion"] == [[3, 1], [1, 2]]  # the nodata pixel counts nowhere
    assert r["pixel_accuracy"] == pytest.approx(5 / 7)
    assert r["per_class"]["oil"]["iou"] == pytest.approx(2 / 4)
    assert r["per_class"]["oil"]["dice"] == pytest.approx(4 / 6)
    assert r["per_class"]["sea"]["iou"] == pytest.approx(3 / 5)
    assert r["fss"]["oil"]["1"] == pytest.approx(1 - 2 / 6)  # 2 mismatched of 3 + 3 event pixels


def test_band_statistics_skip_nodata_and_vector_labels_rasterise(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(5, 2, (2, 90, 70)).astype("float32")
    data[:, :10, :] = -9999
    write_raster(tmp_path / "a.tif", data, nodata=-9999)
    stats = rasters.band_statistics([tmp_path / "a.tif"], [2, 1], block=32)
    valid = data[:, 10:, :].reshape(2, -1).astype(np.float64)
    assert stats["mean"] == pytest.approx(valid.mean(axis=1)[::-1].tolist(), rel=1e-9)
    assert stats["std"] == pytest.approx(valid.std(axis=1)[::-1].tolist(), rel=1e-6)
    with rasterio.open(tmp_path / "a.tif") as src:
        x, ok = rasters.read_window(src, 80, 60, 20, 20, [1])
    assert x.shape == (1, 20, 20) and ok.sum() == 10 * 10  # outside the raster: invalid
    # a 20 x 10 pixel rectangle of class "oil" in world coordinates
    x0, y0 = TRANSFORM * (20, 30)
    box = shapely.box(x0, y0 - 100, x0 + 200, y0)
    pyogrio.raw.write(
        tmp_path / "labels.gpkg",
        geometry=shapely.to_wkb(np.array([box], dtype=object)),
        field_data=[np.array(["oil"], dtype=object)],
        fields=["kind"],
        geometry_type="Polygon",
        crs=CRS,
        driver="GPKG",
    )
    labels = rasters.rasterize_labels(tmp_path / "labels.gpkg", tmp_path / "a.tif", "kind", ["sea", "oil"])
    assert labels.shape == (90, 70) and (labels == 1).sum() == 200
    assert (labels[30:40, 20:40] == 1).all()
    with pytest.raises(ValueError, match="oil"):
        rasters.rasterize_labels(tmp_path / "labels.gpkg", tmp_path / "a.tif", "kind", ["sea", "land"])


def fixed_conv() -> callable:
    """A 'model' with a known output: a fixed random 3x3 convolution (receptive radius 1), softmax."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(conv(torch.from_numpy(batch)), 1).numpy()

    return predict


def test_blended_tiles_equal_whole_image_prediction() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (2, 150, 230)).astype("float32")
    predict = fixed_conv()
    whole = predict(image[None])[0]

    def read(r, c, h, w):
        out = np.zeros((2, h, w), np.float32)
        part = image[:, r : r + h, c : c + w]
        out[:, : part.shape[1], : part.shape[2]] = part
        ok = np.zeros((h, w), bool)
        ok[: part.shape[1], : part.shape[2]] = True
        return out, ok

    tiling = Tiling(tile=64, overlap=16, block=96, batch=3)  # margin 4 >= the conv's radius
    mosaic = np.zeros_like(whole)
    n = 0
    for r, c, probs, valid in predict_blocks(read, 150, 230, predict, tiling):
        assert valid.all()
        mosaic[:, r : r + probs.shape[1], c : c + probs.shape[2]] = probs
        n += 1
    assert n == 2 * 3  # blocks of 96 (2 strides of 48) over 150 x 230
    np.testing.assert_allclose(mosaic, whole, atol=1e-6)


def threshold_model(batch: np.ndarray) -> np.ndarray:
    """Class 1 where band 1 is above 0 (standardised), with a known probability."""
    p1 = 1 / (1 + np.exp(-4 * batch[:, 0]))
    return np.stack([1 - p1, p1], axis=1).astype(np.float32)


def test_outputs_keep_grid_and_an_object_across_tile_borders_is_one_polygon(tmp_path) -> None:
    h, w = 200, 260
    yy, xx = np.mgrid[:h, :w]
    image = np.where((yy - 100) ** 2 + (xx - 112) ** 2 < 30**2, 10.0, 0.0).astype(
        "float32"
    )  # a disc on tile borders
    image[:5, :5] = -1  # nodata corner
    write_raster(tmp_path / "scene.tif", image, nodata=-1)
    card = {"classes": ["sea", "oil"], "bands": [1], "normalization": {"mean": [5.0], "std": [1.0]}}
    out = {
        k: tmp_path / f"scene_{k}.{ext}"
        for k, ext in (("classes", "tif"), ("probabilities", "tif"), ("polygons", "gpkg"))
    }
    summary = predict_raster(
        threshold_model, card, tmp_path / "scene.tif", out, Tiling(64, 16, 64, 4), ["sea"]
    )
    disc = int(((yy - 100) ** 2 + (xx - 112) ** 2 < 30**2).sum())
    assert summary["pixels"]["oil"] == disc and summary["pixels"]["sea"] == h * w - 25 - disc
    assert summary["area_m2"]["oil"] == pytest.approx(disc * 100.0)
    assert summary["polygons"] == {"oil": 1}
    for key, bands in (("classes", 1), ("probabilities", 2)):
        with rasterio.open(out[key]) as src:
            assert src.crs == rasterio.crs.CRS.from_string(CRS) and src.transform == TRANSFORM
            assert (src.height, src.width, src.count) == (h, w, bands)
            assert src.profile["tiled"] and src.nodata == 255
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            data = src.read()
    assert (data[:, :5, :5] == 255).all()  # nodata stays nodata
    with rasterio.open(out["classes"]) as src:
        cls = src.read(1)
    assert (cls[100, 112], cls[0, 100]) == (1, 0)
    info = pyogrio.read_info(out["polygons"])
    assert info["features"] == 1 and rasterio.crs.CRS.from_user_input(
        info["crs"]
    ) == rasterio.crs.CRS.from_string(CRS)
    _, _, geom, fields = pyogrio.raw.read(out["polygons"])
    assert list(fields[0]) == ["oil"] and fields[1][0] == pytest.approx(disc * 100.0)
    assert shapely.area(shapely.from_wkb(geom[0])) == pytest.approx(disc * 100.0)
    # scoring the prediction against itself as labels: perfect scores
    write_raster(tmp_path / "truth.tif", cls, nodata=255, dtype="uint8")
    s = metrics.SemanticScores(["sea", "oil"], [1, 5], ["oil"])
    own = score_raster(out["classes"], tmp_path / "truth.tif", s)
    assert own["mean_iou"] == 1.0 and own["fss"]["oil"] == {"1": 1.0, "5": 1.0}


def test_polygons_of_separate_objects_and_geographic_areas(tmp_path) -> None:
    cls = np.zeros((40, 40), np.uint8)
    cls[2:6, 2:6] = 1
    cls[20:30, 20:22] = 1  # across the strip borders at rows 24
    grid = rasters.Grid(rasterio.crs.CRS.from_epsg(4326).to_wkt(), (0.001, 0, 3.0, 0, -0.001, 43.0), 40, 40)
    blocks = [(0, 0, np.stack([cls == 0, cls == 1]).astype(np.float32), np.ones((40, 40), bool))]
    outputs.write_prediction(blocks, grid, ["sea", "oil"], tmp_path / "c.tif", tmp_path / "p.tif")
    counts = outputs.write_polygons(tmp_path / "c.tif", ["sea", "oil"], tmp_path / "c.gpkg", ["sea"], strip=8)
    assert counts == {"oil": 2}
    _, _, _, (names, area_m2, pixels) = pyogrio.raw.read(tmp_path / "c.gpkg")
    assert list(names) == ["oil", "oil"] and sorted(pixels.tolist()) == [16, 20]
    # about 81 m x 111 m per 0.001 degree pixel at 43 degrees N
    assert area_m2 / pixels == pytest.approx(
        np.full(2, 0.001 * 111_320 * np.cos(np.radians(43)) * 0.001 * 111_100), rel=0.01
    )


def test_streamed_polygons_equal_the_whole_raster_polygonised_at_once(tmp_path) -> None:
    from rasterio import features
    from scipy import ndimage

    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.normal(size=(97, 83)), 1.5)
    cls = np.digitize(field, np.quantile(field, [0.45, 0.75])).astype(np.uint8)  # 3 classes, blobs
    cls[rng.random(cls.shape) < 0.02] = 2  # specks, some touching others only at a corner
    cls[40:47, 10:30] = rasters.NODATA_LABEL
    write_raster(tmp_path / "c.tif", cls, nodata=255, dtype="uint8")
    classes = ["sea", "oil", "lookalike"]
    whole = [
        (classes[int(v)], shapely.geometry.shape(g))
        for g, v in features.shapes(cls, mask=(cls == 1) | (cls == 2), transform=TRANSFORM)
    ]
    counts = outputs.write_polygons(
        tmp_path / "c.tif", classes, tmp_path / "c.gpkg", ["sea"], strip=7, batch=50
    )
    assert counts == {c: sum(n == c for n, _ in whole) for c in ("oil", "lookalike")}
    assert counts["oil"] > 20 and counts["lookalike"] > 100  # many objects, many across strip borders
    meta, _, wkb, (names, area_m2, pixels) = pyogrio.raw.read(tmp_path / "c.gpkg")
    assert meta["geometry_type"] == "MultiPolygon"
    streamed = shapely.get_parts(shapely.from_wkb(wkb))  # one polygon per feature
    assert len(streamed) == len(whole) == len(names)
    assert area_m2.sum() == pytest.approx(sum(g.area for _, g in whole)) == pixels.sum() * 100.0
    assert pixels.sum() == int(((cls == 1) | (cls == 2)).sum())
    tree = shapely.STRtree(streamed)
    matched = set()
    for name, geom in whole:  # each polygon of the whole raster is one streamed polygon, same class
        (i,) = tree.query(geom.representative_point(), predicate="within")
        assert names[i] == name and shapely.equals(streamed[i], geom), (name, geom.bounds)
        assert pixels[i] * 100.0 == pytest.approx(geom.area) == area_m2[i]
        matched.add(int(i))
    assert len(matched) == len(whole)


TRAIN = {
    "seed": 0,
    "tile": 32,
    "tile_overlap": 0,
    "rare_class": "oil",
    "oversample": 4.0,
    "batch_size": 4,
    "epochs": 2,
    "lr": 0.003,
    "weight_decay": 0.0,
    "loss": {"ce": 1.0, "dice": 1.0, "focal": 0.5},
    "class_weights": "balanced",
}
MODEL = {
    "arch": "Unet",
    "encoder": "tu-mobilenetv3_small_050",
    "encoder_depth": 5,
    "decoder_channels": [32, 16, 16, 8, 8],
    "bands": [2],
}


def test_loss_ignores_nodata_pixels() -> None:
    from aquaflow.backends.smp_train import Loss

    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    target[:, :3] = rasters.NODATA_LABEL
    loss = Loss(TRAIN["loss"], torch.tensor([0.6, 3.0]))
    changed = logits.clone()
    changed[:, :, :3] = 50 * torch.randn(2, 2, 3, 8)
    assert float(loss(logits, target)) == pytest.approx(float(loss(changed, target)), rel=1e-6)
    assert float(loss(logits, torch.full_like(target, rasters.NODATA_LABEL))) == 0.0


def test_smp_trains_writes_a_valid_card_and_predicts_through_the_engine(tmp_path) -> None:
    from aquaflow.backends.smp_model import SemanticPredictor
    from aquaflow.backends.smp_train import tile_index, train, write_model
    from aquaflow.models.artifacts import read_card

    rng = np.random.default_rng(0)
    labels = np.zeros((64, 96), np.uint8)
    labels[8:20, 24:40] = 1  # the rare class in 2 of 6 tiles
    bands = rng.normal(0, 1, (2, 64, 96)).astype("float32")
    bands[1] += 4 * labels  # band 2 shows it
    labels[60:, :] = rasters.NODATA_LABEL
    write_raster(tmp_path / "img.tif", bands)
    write_raster(tmp_path / "lab.tif", labels, nodata=255, dtype="uint8")
    pairs = [(str(tmp_path / "img.tif"), str(tmp_path / "lab.tif"))]
    tiles = tile_index(pairs, 32, 32, 1)
    assert len(tiles) == 6 and sum(t.rare for t in tiles) == 2
    net, history, record = train(pairs, pairs, ["sea", "oil"], MODEL, TRAIN)
    assert list(history["epoch"]) == [1, 2] and np.isfinite(history["train_loss"]).all()
    assert record["normalization"]["mean"] == pytest.approx([float(bands[1].mean())], rel=1e-5)
    card = write_model(
        net,
        record,
        ["sea", "oil"],
        MODEL,
        TRAIN,
        tmp_path / "model.safetensors",
        tmp_path / "model_card.json",
    )
    assert read_card(tmp_path / "model_card.json")["id"] == card["id"]
    predictor = SemanticPredictor.load(tmp_path / "model.safetensors", card)
    out = {
        k: tmp_path / f"p_{k}.{ext}"
        for k, ext in (("classes", "tif"), ("probabilities", "tif"), ("polygons", "gpkg"))
    }
    summary = predict_raster(predictor, card, tmp_path / "img.tif", out, Tiling(32, 8, 64, 2), ["sea"])
    assert sum(summary["pixels"].values()) == 64 * 96
    with rasterio.open(out["probabilities"]) as src:
        p = src.read().astype(int)
    assert (np.abs(p.sum(axis=0) - 100) <= 1).all()  # percent probabilities of 2 classes sum to 100


def test_synthetic_sar_scenes_dark_slicks_labelled_lookalikes_not(tmp_path) -> None:
    from aquaflow.synthetic import sar

    index = sar.make(tmp_path, scenes=2, size=128, seed=3)
    for name, info in index["scenes"].items():
        with (
            rasterio.open(tmp_path / "images" / name) as img,
            rasterio.open(tmp_path / "labels" / name) as lab,
        ):
            assert (
                img.crs == lab.crs and img.transform == lab.transform and img.shape == lab.shape == (128, 128)
            )
            assert "not satellite data" in img.tags()["SYNTHETIC"]
            db, labels = img.read(1), lab.read(1)
        nodata = db == sar.NODATA
        assert nodata.any() and ((labels == 255) == nodata).all()
        oil, sea = db[labels == 1], db[labels == 0]
        assert 0.002 < info["oil_fraction"] < 0.1 and oil.size == pytest.approx(
            info["oil_fraction"] * (~nodata).sum()
        )
        assert np.median(sea) - np.median(oil) > 5  # slicks are dark in dB
        assert {s["kind"] for s in info["shapes"]} == {"slick", "lookalike"}


def test_config_names_keys_that_name_unknown_classes_or_overlaps_too_large() -> None:
    from aquaflow.config import ConfigError, check_usecase, load_yaml, validate
    from tests.conftest import REPO

    uc = load_yaml(REPO / "config/usecases/oil_spill.yaml")
    uc["semantic"]["train"]["rare_class"] = "slick"
    uc["semantic"]["predict"] = {"tile": 64, "overlap": 64}
    uc = validate(uc, REPO / "workflow/schemas/usecase.schema.yaml", "oil_spill.yaml")
    with pytest.raises(ConfigError, match=r"semantic.train.rare_class.*slick.*semantic.predict.overlap"):
        check_usecase(uc, "oil_spill.yaml")


def test_sentinel2_scene_stacks_on_the_10m_grid_with_ndwi_labels(tmp_path) -> None:
    from aquaflow.config import check_usecase, load_yaml, validate
    from aquaflow.data import sentinel2
    from tests.conftest import REPO

    index = sentinel2.make(tmp_path, bands=["B03", "B08", "B11"], parts=2)
    with rasterio.open(sentinel2.scene_folder() / "s2_B02.jp2") as ref:
        grid, (h, w) = ref.transform, (ref.height // 2, ref.width // 2)
        crs = ref.crs
    with (
        rasterio.open(tmp_path / "images/part_10.tif") as img,
        rasterio.open(tmp_path / "labels/part_10.tif") as lab,
    ):
        assert img.crs == lab.crs == crs and img.crs.to_epsg() == 32618
        assert img.transform == lab.transform == grid * Affine.translation(0, h)
        assert (img.count, img.shape, lab.shape) == (3, (h, w), (h, w))
        green, nir, swir = img.read()
        labels = lab.read(1)
    np.testing.assert_array_equal(labels, sentinel2.ndwi_water(green, nir))  # the documented rule
    assert swir.std() > 0  # the 20 m band, resampled onto the 10 m grid
    fractions = [p["water_fraction"] for p in index["parts"].values()]
    assert min(fractions) < 0.2 and max(fractions) > 0.8  # a coast: land and sea parts
    # decimated: the same parts on 40 m pixels, each the mean of its 4 x 4 block of 10 m ones
    coarse = sentinel2.make(tmp_path / "coarse", bands=["B03", "B08"], parts=2, decimate=4)
    with rasterio.open(sentinel2.scene_folder() / "s2_B03.jp2") as src:
        b03 = src.read(1).astype(np.float64)  # on the 10 m grid
    h4, w4 = b03.shape[0] // 4 // 2, b03.shape[1] // 4 // 2  # a part of the 40 m grid
    with rasterio.open(tmp_path / "coarse/images/part_10.tif") as img:
        assert img.transform == grid * Affine.translation(0, 4 * h4) * Affine.scale(4)
        assert (img.crs, img.shape, coarse["pixel_m"]) == (crs, (h4, w4), 40.0)
        c_green, c_nir = img.read().astype(np.float64)
    blocks = b03[4 * h4 : 8 * h4, : 4 * w4].reshape(h4, 4, w4, 4).mean(axis=(1, 3))
    assert np.abs(blocks - c_green).max() <= 0.5  # uint16: rounded
    with rasterio.open(tmp_path / "coarse/labels/part_10.tif") as lab:
        np.testing.assert_array_equal(lab.read(1), sentinel2.ndwi_water(c_green, c_nir))
    uc = validate(
        load_yaml(REPO / "config/usecases/s2_coast.yaml"), REPO / "workflow/schemas/usecase.schema.yaml", "s2"
    )
    check_usecase(uc, "s2_coast.yaml")


def test_semantic_intervals_resample_rasters_and_pool_their_pixels():
    """The evaluation's intervals resample rasters (a draw pools its rasters' pixels, as the
    figures do): pixel accuracy's is scipy's percentile bootstrap of that pooled statistic with the
    same draws; every figure (FSS per class and scale included) gets one; one raster gives none."""
    from scipy import stats

    from aquaflow.tasks.semantic.metrics import SemanticScores

    rng = np.random.default_rng(1)
    fields = []
    for k in range(5):  # rasters of different sizes and skill
        truth = (rng.random((20 + 4 * k, 24)) < 0.2).astype(np.uint8)
        pred = np.where(rng.random(truth.shape) < 0.1 * (k + 1), 1 - truth, truth).astype(np.uint8)
        fields.append((truth, pred))
    scores = SemanticScores(["sea", "oil"], [1, 3], ["oil"])
    for truth, pred in fields:
        scores.add(truth, pred)
    block = scores.intervals({"resamples": 200, "seed": 5})
    assert block["method"] == "percentile bootstrap over rasters" and block["resamples"] == 200
    assert set(block) >= {"pixel_accuracy", "mean_iou", "mean_dice", "fss_oil_1", "fss_oil_3"}
    right = np.array([(t == p).sum() for t, p in fields], float)
    pixels = np.array([t.size for t, _ in fields], float)
    direct = stats.bootstrap(
        (np.arange(5),),
        lambda i: right[i].sum() / pixels[i].sum(),
        vectorized=False,
        n_resamples=200,
        method="percentile",
        random_state=np.random.default_rng(5),
    ).confidence_interval
    assert block["pixel_accuracy"] == pytest.approx([direct.low, direct.high])
    pooled = scores.result()
    assert scores._figures(np.arange(5))["pixel_accuracy"] == pytest.approx(pooled["pixel_accuracy"])
    assert scores._figures(np.arange(5))["fss_oil_3"] == pytest.approx(pooled["fss"]["oil"]["3"])
    one = SemanticScores(["sea", "oil"], [1], ["oil"])
    one.add(*fields[0])
    assert set(one.intervals({})) == {"method", "resamples", "level", "seed"}

"""Drift detection with the real frouros detectors on images put through the real shard engine.

The images are i.i.d. draws from one synthetic FlowCam-like distribution (aquaflow.synthetic.plankton):
a reference sample, a held-out batch, 20 more in-distribution batches, and three shifted batches
(blurred, darkened, another instrument). The feature extractor is a real timm network (random
weights, seeded: no training needed for its penultimate layer to respond to image content).
"""

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from scipy.stats import binom

from aquaflow.backends import torch_model as models
from aquaflow.data.inputs import from_folder
from aquaflow.engine import infer, reference
from aquaflow.io import sha256_file, write_json
from aquaflow.monitoring import drift
from aquaflow.synthetic import plankton

ALPHA = 0.05
N_IN_DIST = 20
# Under H0 each batch is flagged with probability <= alpha (Holm over the 7 tests of a batch).
# Allowing at most 4 false alarms in 20 batches: P(Binomial(20, 0.05) >= 5) = 0.26 %.
MAX_FALSE_ALARMS = 4

CFG = {
    "detectors": ["mmd", "stats", "label_shift"],
    "univariate_test": "ks",
    "alpha": ALPHA,
    "correction": "holm",
    "permutations": 200,
    "pca_components": 16,
    "sample_size": 200,
    "seed": 0,
    "reference": {"splits": ["train"], "sample_size": 400},
    "batch": {"by": "folder", "size": 1000, "min_size": 20},
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    net = timm.create_model("lcnet_050", pretrained=False, num_classes=len(plankton.CLASSES))
    models.save_weights(net, folder / "model.safetensors")
    card = {
        "id": sha256_file(folder / "model.safetensors"),
        "format": "safetensors",
        "arch": "lcnet_050",
        "classes": list(plankton.CLASSES),
        "input_size": 64,
        "normalization": {"mean": list(models.IMAGENET_MEAN), "std": list(models.IMAGENET_STD)},
    }
    write_json(card, folder / "model_card.json")
    return folder / "model.safetensors", folder / "model_card.json"


@pytest.fixture(scope="module")
def report(tmp_path_factory, model):
    """Reference from 300 training images; one campaign with a folder per batch; drift.run on it."""
    weights, card = model
    work = tmp_path_factory.mktemp("drift")
    ref_imgs = plankton.write_images(work / "train", 300, seed=0)
    manifest = pd.DataFrame(
        {
            "id": [p.stem for p, _ in ref_imgs],
            "path": [p.name for p, _ in ref_imgs],
            "label": [c for _, c in ref_imgs],
            "split": "train",
        }
    )
    ref = reference.build_reference(manifest, work / "train", weights, card, CFG, threads=2, device="cpu")
    meta = drift.save_reference(ref, work / "ref.npz", work / "ref.json")
    camp = work / "campaign"
    plankton.write_images(camp / "heldout", 150, seed=1)
    plankton.write_images(camp / "blurred", 150, seed=2, transform=plankton.blur)
    plankton.write_images(camp / "darkened", 150, seed=3, transform=plankton.darken)
    plankton.write_images(camp / "other_instrument", 150, seed=4, instrument="other")
    for i in range(N_IN_DIST):
        plankton.write_images(camp / f"indist{i:02d}", 100, seed=100 + i)
    inputs = from_folder(camp, [".png"])
    inputs.insert(0, "seq", np.arange(len(inputs)))
    infer.run_shard(
        inputs,
        weights,
        card,
        work / "pred.parquet",
        work / "rej.parquet",
        work / "summary.json",
        embeddings=True,
        threads=2,
        device="cpu",
    )
    out = {"json": work / "drift.json", "table": work / "drift.tsv", "plot": work / "driftwatch.png"}
    rep = drift.run(
        predictions=work / "pred.parquet", reference=work / "ref.npz", out=out, cfg=CFG, title="t"
    )
    return rep, meta, out, work


def _batch(rep, name):
    return next(b for b in rep["batches"] if b["batch"] == name)


def test_reference_is_stored_with_its_summary(report):
    _, meta, _, work = report
    ref = drift.load_reference(work / "ref.npz")
    assert ref["embeddings"].shape == (300, 16) and ref["stats"].shape == (300, len(drift.STATS))
    assert meta["images"] == 300 and sum(meta["training_class_distribution"].values()) == 300
    assert set(meta["training_class_distribution"]) == set(plankton.CLASSES)
    assert 40 <= meta["stats"]["size"]["median"] <= 90  # sqrt(w*h) of 40..90 px crops
    assert ref["predicted"].dtype.kind == "U"  # no pickled objects in the file


def test_heldout_batch_is_not_flagged(report):
    rep, *_ = report
    b = _batch(rep, "heldout")
    assert b["drift"] is False and b["n"] == b["n_tested"] == 150
    assert set(b["tests"]) == {"mmd", "label_shift"} | {f"ks_{s}" for s in drift.STATS}


@pytest.mark.parametrize(
    ("batch", "must_fire"),
    [
        ("blurred", {"ks_sharpness"}),
        ("darkened", {"ks_brightness"}),
        ("other_instrument", {"mmd", "ks_size", "ks_brightness"}),
    ],
)
def test_shifted_batches_are_flagged_by_the_right_test(report, batch, must_fire):
    rep, *_ = report
    b = _batch(rep, batch)
    assert b["drift"] is True
    fired = {k for k, t in b["tests"].items() if t["drift"]}
    assert must_fire <= fired, fired
    assert batch in rep["overall"]["drifted_batches"]


def test_false_alarms_over_20_in_distribution_batches(report):
    rep, *_ = report
    flagged = [b["batch"] for b in rep["batches"] if b["batch"].startswith("indist") and b["drift"]]
    assert binom.sf(MAX_FALSE_ALARMS, N_IN_DIST, ALPHA) < 0.005  # the bound is a strict one
    assert len(flagged) <= MAX_FALSE_ALARMS, flagged
    print(f"false alarms: {len(flagged)} of {N_IN_DIST} in-distribution batches at alpha {ALPHA}")


def test_outputs_json_table_plot(report):
    rep, _, out, _ = report
    saved = json.loads(out["json"].read_text())
    assert saved["overall"]["drifted_batches"] == rep["overall"]["drifted_batches"]
    assert saved["overall"]["tested_batches"] == N_IN_DIST + 4
    for b in saved["batches"]:
        for t in b["tests"].values():
            assert 0.0 <= t["p_value"] <= t["p_adjusted"] <= 1.0 and t["threshold"] == ALPHA
        assert b["tests"]["mmd"]["statistic_threshold"] > 0
    table = pd.read_csv(out["table"], sep="\t")
    assert set(table["batch"]) == {b["batch"] for b in saved["batches"]} | {"overall"}
    assert len(table) == 7 * (N_IN_DIST + 5)
    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_policy_fail_names_the_drifted_batches(report, tmp_path):
    _, _, out, _ = report
    with pytest.raises(drift.DriftDetected, match=r"blurred.*darkened.*other_instrument"):
        drift.check(out["json"], "fail", tmp_path / "policy.json")
    assert not (tmp_path / "policy.json").exists()
    drift.check(out["json"], "warn", tmp_path / "policy.json")
    assert "blurred" in json.loads((tmp_path / "policy.json").read_text())["drifted_batches"]


def test_image_stats():
    flat = np.full((30, 60, 3), 100, np.uint8)
    s = dict(zip(drift.STATS, drift.image_stats(flat, 60, 30), strict=True))
    assert s["size"] == pytest.approx(np.sqrt(1800)) and s["aspect"] == pytest.approx(2.0)
    assert s["brightness"] == pytest.approx(100, abs=0.5) and s["contrast"] == 0 and s["sharpness"] == 0
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert drift.image_stats(plankton.blur(sharp), 64, 64)[4] < drift.image_stats(sharp, 64, 64)[4] / 10
    # the original size counts, not the (draft-decoded) array's size
    assert drift.image_stats(sharp, 640, 320)[0] == pytest.approx(np.sqrt(640 * 320))


def test_holm_matches_the_textbook_procedure():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 with running max
    np.testing.assert_allclose(drift.holm(p), [0.03, 0.06, 0.06, 0.02])


def test_batches_by_chunk_folder_column():
    preds = pd.DataFrame(
        {
            "seq": range(10),
            "source": [f"/d/{'a' if i < 4 else 'b'}/x{i}.png" for i in range(10)],
            "sample": ["s2"] * 5 + ["s1"] * 5,
        }
    )
    chunks = drift.make_batches(preds, {"by": "chunk", "size": 4})
    assert [n for n, _ in chunks] == ["chunk1", "chunk2", "chunk3"] and sum(len(i) for _, i in chunks) == 10
    folders = dict(drift.make_batches(preds, {"by": "folder"}))
    assert list(folders) == ["a", "b"] and list(folders["a"]) == [0, 1, 2, 3]
    samples = drift.make_batches(preds, {"by": "sample"})
    assert [n for n, _ in samples] == ["s1", "s2"]
    with pytest.raises(ValueError, match=r"drift\.batch\.by: 'date'"):
        drift.make_batches(preds, {"by": "date"})


def test_too_few_permutations_is_a_clear_error():
    cfg = {**CFG, "permutations": 50}
    with pytest.raises(ValueError, match=r"drift\.permutations=50 is too few"):
        drift.detect(pd.DataFrame({"seq": [], "top1_label": []}), {}, cfg)


def test_permutation_statistic_is_the_frouros_statistic():
    """The vectorised MMD² of any split of the pooled sample equals frouros's MMD on that split."""
    from frouros.detectors.data_drift import MMD
    from frouros.utils.kernels import rbf_kernel

    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(size=(40, 3)), rng.normal(0.3, 1, size=(25, 3))])
    gram = rbf_kernel(data, data, sigma=1.3)
    splits = np.zeros((65, 3), bool)
    splits[:40, 0] = True  # the observed split
    splits[rng.choice(65, 40, replace=False), 1] = True
    splits[rng.choice(65, 30, replace=False), 2] = True
    ours = drift.mmd_from_gram(gram, splits)
    for j in range(3):
        det = MMD(kernel=lambda a, b: rbf_kernel(a, b, sigma=1.3))
        det.fit(X=data[splits[:, j]])
        assert ours[j] == pytest.approx(det.compare(X=data[~splits[:, j]])[0].distance, rel=1e-9, abs=1e-12)
    assert drift.mmd_test(data[:40], data[40:], 1.3, 200, 0)["statistic"] == pytest.approx(ours[0])
    null = drift.permuted_mmd(gram, 40, 500, seed=1)
    assert null.shape == (500,) and abs(null.mean()) < 0.05  # centred near 0 under exchangeability

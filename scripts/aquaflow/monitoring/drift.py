"""Drift monitoring: do a campaign's images still look like the training data?

Reference (built once per model, stored with it): a sample of the training images put through the
same decoding and model as bulk inference -> PCA-reduced penultimate-layer embeddings, five image
statistics (size, aspect ratio, brightness, contrast, sharpness) and the model's predicted classes,
plus the training class distribution.

Per batch of a campaign (fixed-size chunks, a folder, or any predictions column such as a sample
id or date) frouros detectors compare the batch with the reference:
- `mmd`: MMD on the embeddings (RBF kernel, median-distance bandwidth), permutation-test p-value;
- `stats`: one KS (or Cramér-von Mises) test per image statistic;
- `label_shift`: chi-square test of predicted class frequencies (batch vs reference predictions).
All p-values of a batch are Holm-corrected together, so a batch of in-distribution images is
flagged with probability <= alpha.

Detection-type tasks (detect, segment, obb) use the per-image table of the detection shards
(`counts.parquet`: the image statistics and detections per class of every predicted image) and a
reference made by the same detector on the reference images. `label_shift` is then one two-sample
test (the `univariate_test`) per class of the per-image counts `n_<class>` plus one of the total
`n`: images are independent draws, the detections within an image are not, so the image is the
unit tested. The Ultralytics backend stores no embeddings: `mmd` is listed as unavailable.

Sound (task sound) tests windows: the reference is the model run on windows of its training
recordings (`aquaflow.engine.sound.build_reference`: embeddings and predicted classes, no image
statistics, so `stats` is listed as unavailable); a campaign's per-window table gives the
embeddings and the predicted class (`label`).

Task semantic (rasters) uses the campaign's per-raster table (`predictions.parquet`: a seeded sample
of valid pixels per band, `band_<b>`, and the predicted pixels per class) and a reference made by the
same model on the training rasters (`reference["pixels"]`, `reference["cover"]`): `stats` is one
two-sample test per band of the pooled pixel values of the batch's rasters (nodata never sampled),
`label_shift` one per class of the per-raster class cover (fraction of valid pixels).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from aquaflow.io import atomic_path, read_json, write_json, write_tsv

log = logging.getLogger(__name__)

STATS = ("size", "aspect", "brightness", "contrast", "sharpness")
STAT_COLUMNS = tuple(f"img_{s}" for s in STATS)
DETECTORS = ("mmd", "stats", "label_shift")
_SHARPNESS_SIDE = 512  # sharpness on a copy no larger than this (bounded cost on huge images)


class DriftDetected(RuntimeError):
    """Raised by the `on_drift: fail` policy; the message names the drifted batches."""


def image_stats(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """size (sqrt of the original pixel count), aspect (w/h), brightness and contrast (mean, std
    of grey levels) and sharpness (variance of the Laplacian) of a decoded RGB uint8 image."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(gray)
    side = max(gray.shape)
    if side > _SHARPNESS_SIDE:
        f = _SHARPNESS_SIDE / side
        h, w = gray.shape
        if min(round(h * f), round(w * f)) >= 1:
            gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        else:  # a strip thinner than 1 px once scaled: keep 1 px (OpenCV refuses an empty size)
            dsize = (max(1, round(w * f)), max(1, round(h * f)))
            gray = cv2.resize(gray, dsize, interpolation=cv2.INTER_AREA)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))
    return np.array(
        [np.sqrt(width * height), width / height, mean[0, 0], std[0, 0], lap_std[0, 0] ** 2],
        dtype=np.float32,
    )


# --- reference -----------------------------------------------------------------------------------


def sample_rows(table: pd.DataFrame, n: int, seed: int, by: str | None = None) -> pd.DataFrame:
    """At most n rows, stratified by `by` (proportional), in a seeded random order."""
    if len(table) <= n:
        return table
    if by is None:
        return table.sample(n=n, random_state=seed)
    frac = n / len(table)
    return table.groupby(by, group_keys=False).sample(frac=frac, random_state=seed)


def median_bandwidth(x: np.ndarray, seed: int = 0, max_points: int = 500) -> float:
    """Median pairwise Euclidean distance (the usual RBF bandwidth heuristic)."""
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    d = pdist(x)
    med = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
    return med


def embedding_reference(emb: np.ndarray, components: int, seed: int) -> dict[str, np.ndarray]:
    """The embedding part of a reference: a PCA fitted on `emb` (at most `components`), the reduced
    embeddings and their median-distance RBF bandwidth (the MMD's)."""
    from sklearn.decomposition import PCA

    k = int(min(components, emb.shape[1], len(emb) - 1))
    pca = PCA(n_components=k, random_state=seed).fit(emb)
    reduced = pca.transform(emb).astype(np.float32)
    log.info(
        "reference: %d items, embeddings %d -> %d (PCA, %.0f%% variance)",
        len(emb),
        emb.shape[1],
        k,
        100 * pca.explained_variance_ratio_.sum(),
    )
    return {
        "pca_mean": pca.mean_.astype(np.float32),
        "pca_components": pca.components_.astype(np.float32),
        "embeddings": reduced,
        "bandwidth": np.float64(median_bandwidth(reduced, seed)),
    }


def save_reference(ref: dict[str, np.ndarray], path: str | Path, meta_path: str | Path) -> dict[str, Any]:
    """The arrays as .npz (no pickled objects) and a JSON summary beside them."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **ref)
    meta: dict[str, Any] = {"model_id": str(ref["model_id"]), "images": reference_size(ref)}
    if "embeddings" in ref:
        meta |= {
            "pca_components": int(ref["pca_components"].shape[0]),
            "embedding_dim": int(ref["pca_components"].shape[1]),
            "bandwidth": float(ref["bandwidth"]),
        }
    if "stats" in ref:
        meta["stats"] = {
            s: {"median": float(np.median(ref["stats"][:, j])), "iqr": _iqr(ref["stats"][:, j])}
            for j, s in enumerate(STATS)
        }
    if "pixels" in ref:  # task semantic: band pixels of the reference rasters, their class cover
        meta["pixels_per_band"] = len(ref["pixels"])
        meta["bands"] = {
            f"band_{b}": {"median": float(np.median(ref["pixels"][:, j])), "iqr": _iqr(ref["pixels"][:, j])}
            for j, b in enumerate(ref["bands"].tolist())
        }
        meta["mean_cover"] = dict(zip(ref["classes"].tolist(), ref["cover"].mean(0).tolist(), strict=True))
    if "predicted" in ref:
        meta["predicted_distribution"] = _freq(ref["predicted"])
    if "counts" in ref:  # detection-type tasks: detections per class and per image
        meta["detections_per_class"] = dict(
            zip(ref["classes"].tolist(), ref["counts"].sum(0).tolist(), strict=True)
        )
        meta["mean_detections_per_image"] = float(ref["counts"].sum(1).mean()) if len(ref["counts"]) else 0.0
    meta["training_class_distribution"] = dict(
        zip(ref["train_labels"].tolist(), ref["train_counts"].tolist(), strict=True)
    )
    write_json(meta, meta_path)
    return meta


def reference_size(ref: dict[str, np.ndarray]) -> int:
    """Items (images; rasters for task semantic; windows of a sound reference) the reference was made from."""
    if "pixels" in ref:
        return len(ref["cover"])
    return len(ref["stats"] if "stats" in ref else ref["embeddings"])


def load_reference(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _iqr(x: np.ndarray) -> list[float]:
    return [float(v) for v in np.percentile(x, [25, 75])]


def _freq(labels: np.ndarray) -> dict[str, int]:
    u, c = np.unique(labels, return_counts=True)
    return dict(zip(u.tolist(), c.tolist(), strict=True))


# --- batches -------------------------------------------------------------------------------------


def make_batches(preds: pd.DataFrame, batch_cfg: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
    """(name, row positions) per batch, in order: key order for a column or folder, else input order.

    by = chunk: consecutive rows in balanced chunks of about `size`; folder: the folder of each
    source; anything else: that column of the predictions (a sample id, a date, ...).
    """
    by, n = batch_cfg["by"], len(preds)
    if by == "chunk":
        k = max(1, int(np.ceil(n / batch_cfg["size"])))
        width = len(str(k))
        return [
            (f"chunk{i + 1:0{width}d}", idx)
            for i, idx in enumerate(np.array_split(np.arange(n), k))
            if len(idx)
        ]
    if by == "folder":
        parents = preds["source"].astype(str).map(os.path.dirname)
        common = os.path.commonpath(list(set(parents))) if n else ""
        keys = parents.map(lambda d: os.path.relpath(d, common) if d != common else os.path.basename(d))
    elif by in preds.columns:
        keys = preds[by].astype(str)
    else:
        cols = [c for c in preds.columns if c != "embedding"]
        raise ValueError(f"drift.batch.by: {by!r} is neither chunk, folder nor a predictions column ({cols})")
    groups = pd.Series(np.arange(n)).groupby(keys.to_numpy(), sort=True)
    return [(str(key), idx.to_numpy()) for key, idx in groups]


# --- tests ---------------------------------------------------------------------------------------


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control, any dependence)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def permuted_mmd(gram: np.ndarray, n: int, permutations: int, seed: int) -> np.ndarray:
    """MMD² (the unbiased estimate frouros computes, k(x, x) = 1) for random re-splits of the pooled
    sample into n reference and len(gram) - n batch rows, all at once from the Gram matrix.

    frouros's PermutationTestDistanceBased recomputes the kernel in a forked process pool for every
    test (0.2-0.7 s per batch here); one matrix product over the permutations gives the same null
    distribution in milliseconds."""
    rng = np.random.default_rng(seed)
    in_ref = (np.argsort(rng.random((permutations, len(gram))), axis=1) < n).T  # pooled rows x permutations
    return mmd_from_gram(gram, in_ref)


def mmd_from_gram(gram: np.ndarray, in_ref: np.ndarray) -> np.ndarray:
    """MMD² per column of the boolean matrix `in_ref` (which pooled rows are the reference)."""
    a = in_ref.astype(gram.dtype)
    b = 1.0 - a
    n, m = a.sum(0), b.sum(0)
    k_a, k_b = gram @ a, gram @ b
    s_rr = (a * k_a).sum(0) - n
    s_nn = (b * k_b).sum(0) - m
    s_rn = (a * k_b).sum(0)
    return s_rr / (n * (n - 1)) + s_nn / (m * (m - 1)) - 2 * s_rn / (n * m)


def mmd_test(
    ref: np.ndarray, x: np.ndarray, bandwidth: float, permutations: int, seed: int
) -> dict[str, float]:
    """frouros MMD (RBF kernel) of the batch against the reference, with a permutation p-value
    (b + 1) / (B + 1) (Phipson & Smyth; frouros's 'conservative' method)."""
    from frouros.detectors.data_drift import MMD
    from frouros.utils.kernels import rbf_kernel

    ref, x = ref.astype(np.float64), x.astype(np.float64)
    det = MMD(kernel=functools.partial(rbf_kernel, sigma=bandwidth))
    det.fit(X=ref)
    result, _ = det.compare(X=x)
    observed = float(result.distance)
    data = np.concatenate([ref, x])
    permuted = permuted_mmd(rbf_kernel(data, data, sigma=bandwidth), len(ref), permutations, seed)
    return {
        "statistic": observed,
        "p_value": float(((permuted >= observed).sum() + 1) / (permutations + 1)),
        "permuted_mean": float(permuted.mean()),
        "permuted_quantiles": permuted,  # popped by the caller once the threshold is known
    }


def univariate_test(ref: np.ndarray, x: np.ndarray, kind: str) -> dict[str, float]:
    from frouros.detectors.data_drift import CVMTest, KSTest

    det = {"ks": KSTest, "cvm": CVMTest}[kind]()
    det.fit(X=ref.astype(np.float64))
    result, _ = det.compare(X=x.astype(np.float64))
    return {"statistic": float(result.statistic), "p_value": float(result.p_value)}


def count_columns(classes: list[str]) -> list[str]:
    """The per-image count columns of a detection campaign's counts table: n, then n_<class>."""
    return ["n", *(f"n_{c}" for c in classes)]


def shift_tests(
    ref: np.ndarray, x: np.ndarray, names: list[str], kind: str, prefix: str
) -> dict[str, dict[str, float]]:
    """One two-sample test (`kind`: ks | cvm) per column of ref and x, named `<prefix>_<name>`."""
    out = {}
    for j, name in enumerate(names):
        a, b = ref[:, j], x[:, j]
        if np.unique(np.concatenate([a, b])).size < 2:  # the same value everywhere: nothing can shift
            out[f"{prefix}_{name}"] = {"statistic": 0.0, "p_value": 1.0}
        else:
            out[f"{prefix}_{name}"] = univariate_test(a, b, kind)
    return out


def count_tests(ref: np.ndarray, x: np.ndarray, classes: list[str], kind: str) -> dict[str, dict[str, float]]:
    """Shift of the per-image detection counts: one two-sample test (`kind`: ks | cvm) of the total
    per image and one per class; ref and x are (images, 1 + classes) in count_columns order."""
    return shift_tests(ref, x, ["total", *classes], kind, "count")


def band_columns(bands: list[int]) -> list[str]:
    """The per-raster pixel-sample columns of a semantic campaign's predictions: band_<b>."""
    return [f"band_{b}" for b in bands]


def cover_of(preds: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """(rasters, classes): each raster's predicted pixels per class over its valid pixels."""
    pixels = preds[[f"pixels_{c}" for c in classes]].to_numpy(np.float64)
    return pixels / np.maximum(pixels.sum(1, keepdims=True), 1.0)


def pooled_pixels(preds: pd.DataFrame, bands: list[int]) -> np.ndarray:
    """(pixels, bands): the pixel samples of every raster of `preds`, pooled."""
    cols = [np.concatenate([np.asarray(v, np.float64) for v in preds[c]]) for c in band_columns(bands)]
    return np.column_stack(cols) if cols and len(cols[0]) else np.empty((0, len(bands)))


def label_shift_test(ref: np.ndarray, x: np.ndarray) -> dict[str, float]:
    from frouros.detectors.data_drift import ChiSquareTest

    if len(np.union1d(ref, x)) < 2:  # one class everywhere: nothing can shift
        return {"statistic": 0.0, "p_value": 1.0}
    det = ChiSquareTest()
    det.fit(X=ref.astype(object))
    result, _ = det.compare(X=x.astype(object))
    return {"statistic": float(result.statistic), "p_value": float(result.p_value)}


def test_batch(
    ref: dict[str, np.ndarray],
    emb: np.ndarray | None,
    stats: np.ndarray | None,
    labels: np.ndarray | None,
    cfg: dict[str, Any],
    seed: int,
    counts: np.ndarray | None = None,
    pixels: np.ndarray | None = None,
    cover: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every configured detector on one batch (already sampled); Holm-corrected verdicts.
    Class shift: `labels` (top-1 of a classifier), `counts` (per-image detections, count_columns)
    or `cover` (per-raster class cover); `pixels`: a semantic batch's pooled band pixels."""
    alpha, tests = cfg["alpha"], {}
    if "mmd" in cfg["detectors"] and emb is not None:
        r = mmd_test(ref["mmd_sample"], emb, float(ref["bandwidth"]), cfg["permutations"], seed)
        permuted = r.pop("permuted_quantiles")
        r["statistic_threshold"] = float(np.quantile(permuted, 1 - alpha))
        tests["mmd"] = r
    if "stats" in cfg["detectors"] and stats is not None:
        for j, s in enumerate(STATS):
            tests[f"{cfg['univariate_test']}_{s}"] = univariate_test(
                ref["stats"][:, j], stats[:, j], cfg["univariate_test"]
            )
    if "stats" in cfg["detectors"] and pixels is not None:
        bands = [f"band_{b}" for b in ref["bands"].tolist()]
        tests |= shift_tests(ref["pixels"], pixels, bands, cfg["univariate_test"], cfg["univariate_test"])
    if "label_shift" in cfg["detectors"] and cover is not None:
        classes = ref["classes"].astype(str).tolist()
        tests |= shift_tests(ref["cover"], cover, classes, cfg["univariate_test"], "cover")
    if "label_shift" in cfg["detectors"] and labels is not None:
        tests["label_shift"] = label_shift_test(ref["predicted"], labels)
    if "label_shift" in cfg["detectors"] and counts is not None:
        classes = ref["classes"].astype(str).tolist()
        tests |= count_tests(_ref_counts(ref), counts, classes, cfg["univariate_test"])
    names = list(tests)
    adjusted = holm(np.array([tests[k]["p_value"] for k in names])) if names else []
    for k, pa in zip(names, adjusted, strict=True):
        p_adj = pa if cfg["correction"] == "holm" else tests[k]["p_value"]
        tests[k].update(p_adjusted=float(p_adj), threshold=alpha, drift=bool(p_adj < alpha))
    return {"tests": tests, "drift": any(t["drift"] for t in tests.values())}


def _needed_permutations(cfg: dict[str, Any], n_tests: int) -> None:
    """With a Holm correction the smallest threshold is alpha/m: the permutation p-value (>= 1/(B+1))
    must be able to go below it, or MMD could never fire first."""
    if "mmd" not in cfg["detectors"] or cfg["correction"] != "holm":
        return
    need = int(np.ceil(n_tests / cfg["alpha"]))
    if cfg["permutations"] + 1 < need:
        raise ValueError(
            f"drift.permutations={cfg['permutations']} is too few for alpha={cfg['alpha']} over "
            f"{n_tests} tests: the smallest p-value is 1/(permutations+1); use at least {need - 1}"
        )


def _ref_counts(ref: dict[str, np.ndarray]) -> np.ndarray:
    """The reference's per-image counts as (images, 1 + classes): the total, then each class."""
    return np.column_stack([ref["counts"].sum(1), ref["counts"]])


def unavailable(ref: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, str]:
    """Configured detectors the model cannot serve, with the reason (listed in drift.json)."""
    if "mmd" in cfg["detectors"] and "counts" in ref and "embeddings" not in ref:  # a detector's reference
        return {"mmd": "the Ultralytics backend stores no embeddings; image statistics and counts are tested"}
    if "stats" in cfg["detectors"] and "embeddings" in ref and "stats" not in ref:  # sound (windows)
        return {"stats": "recordings have no image statistics; embeddings and predicted classes are tested"}
    if "mmd" in cfg["detectors"] and "pixels" in ref:  # a semantic model's reference
        return {"mmd": "the smp backend stores no embeddings; band pixels and class cover are tested"}
    return {}


def detect(preds: pd.DataFrame, ref: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, Any]:
    """All batches plus the whole campaign ('overall') tested against the reference.

    `preds`: a classifier's predictions (top1_label, embedding, img_*) or, with a detection
    reference (one holding `counts`), the per-image table of a detection campaign (n, n_<class>, img_*)."""
    seed = cfg["seed"]
    missing = unavailable(ref, cfg)
    cfg = {**cfg, "detectors": [d for d in cfg["detectors"] if d not in missing]}
    by_counts, by_raster = "counts" in ref, "pixels" in ref
    classes = ref["classes"].astype(str).tolist() if by_counts or by_raster else []
    n_shift = (1 + len(classes)) if by_counts else len(classes) if by_raster else 1
    n_stats = len(ref["bands"]) if by_raster else len(STATS)
    n_tests = (
        ("mmd" in cfg["detectors"])
        + n_stats * ("stats" in cfg["detectors"])
        + n_shift * ("label_shift" in cfg["detectors"])
    )
    _needed_permutations(cfg, n_tests)
    if "mmd" in cfg["detectors"] and "embedding" not in preds.columns:
        raise ValueError("the predictions have no embeddings: set inference.embeddings: true")
    if by_raster:
        return _detect_rasters(preds, ref, cfg, missing)
    if "stats" in cfg["detectors"] and not set(STAT_COLUMNS) <= set(preds.columns):
        raise ValueError("the predictions have no image statistics: set inference.embeddings: true")
    ref = dict(ref)
    emb_all = stats_all = labels_all = counts_all = None
    n_mmd = 0
    if "mmd" in cfg["detectors"]:
        rng = np.random.default_rng(seed)
        n_mmd = min(cfg["sample_size"], len(ref["embeddings"]))
        ref["mmd_sample"] = ref["embeddings"][rng.choice(len(ref["embeddings"]), n_mmd, replace=False)]
        raw = np.stack(preds["embedding"].to_numpy()).astype(np.float32)
        emb_all = (raw - ref["pca_mean"]) @ ref["pca_components"].T
    if "stats" in cfg["detectors"]:
        stats_all = preds[list(STAT_COLUMNS)].to_numpy(np.float32)
    if by_counts:
        counts_all = preds[count_columns(classes)].to_numpy(np.float64)
    else:
        labels_all = preds["top1_label"].astype(str).to_numpy()

    def run(idx: np.ndarray, salt: int) -> dict[str, Any]:
        if len(idx) > cfg["sample_size"]:
            idx = np.sort(np.random.default_rng(seed + salt).choice(idx, cfg["sample_size"], replace=False))
        return test_batch(
            ref,
            None if emb_all is None else emb_all[idx],
            None if stats_all is None else stats_all[idx],
            None if labels_all is None else labels_all[idx],
            cfg,
            seed + salt,
            None if counts_all is None else counts_all[idx],
        ) | {"n_tested": len(idx)}

    return _report(preds, ref, cfg, missing, run, n_mmd)


def _detect_rasters(
    preds: pd.DataFrame, ref: dict[str, np.ndarray], cfg: dict[str, Any], missing: dict[str, str]
) -> dict[str, Any]:
    """detect() for task semantic: band pixels and class cover of each batch of rasters."""
    bands, classes = ref["bands"].tolist(), ref["classes"].astype(str).tolist()
    if "stats" in cfg["detectors"] and not set(band_columns(bands)) <= set(preds.columns):
        raise ValueError(
            f"the predictions have no pixel samples {band_columns(bands)} (a semantic campaign's)"
        )
    cover_all = cover_of(preds, classes)

    def run(idx: np.ndarray, salt: int) -> dict[str, Any]:
        if len(idx) > cfg["sample_size"]:
            idx = np.sort(
                np.random.default_rng(cfg["seed"] + salt).choice(idx, cfg["sample_size"], replace=False)
            )
        pixels = pooled_pixels(preds.iloc[idx], bands) if "stats" in cfg["detectors"] else None
        return test_batch(
            ref, None, None, None, cfg, cfg["seed"] + salt, pixels=pixels, cover=cover_all[idx]
        ) | {"n_tested": len(idx)}

    return _report(preds, ref, cfg, missing, run, 0)


def _report(preds, ref, cfg, missing, run, n_mmd: int) -> dict[str, Any]:
    """Every batch of `preds` and the whole campaign through `run(rows, salt)`: the drift report."""
    batches = []
    for i, (name, idx) in enumerate(make_batches(preds, cfg["batch"])):
        entry: dict[str, Any] = {"batch": name, "n": len(idx), "first_seq": int(preds["seq"].iloc[idx[0]])}
        if len(idx) < cfg["batch"]["min_size"]:
            entry |= {
                "drift": None,
                "skipped": f"fewer than drift.batch.min_size={cfg['batch']['min_size']} images",
            }
        else:
            entry |= run(idx, i + 1)
        batches.append(entry)
    overall = run(np.arange(len(preds)), 0) if len(preds) >= cfg["batch"]["min_size"] else {"drift": None}
    drifted = [b["batch"] for b in batches if b["drift"]]
    return {
        "alpha": cfg["alpha"],
        "correction": cfg["correction"],
        "detectors": list(cfg["detectors"]),
        "univariate_test": cfg["univariate_test"],
        "permutations": cfg["permutations"],
        "batch": dict(cfg["batch"]),
        "unavailable": missing,
        "reference": {
            "images": reference_size(ref),
            "model_id": str(ref["model_id"]),
            "mmd_sample": n_mmd,
        },
        "images": len(preds),
        "batches": batches,
        "overall": overall
        | {"drifted_batches": drifted, "tested_batches": sum(b["drift"] is not None for b in batches)},
    }


def batch_rows(report: dict[str, Any]) -> pd.DataFrame:
    """One row per batch and test (the report table)."""
    rows = []
    for b in [*report["batches"], {"batch": "overall", "n": report["images"], **report["overall"]}]:
        for test, r in (b.get("tests") or {}).items():
            rows.append(
                {
                    "batch": b["batch"],
                    "n": b["n"],
                    "test": test,
                    "statistic": r["statistic"],
                    "p_value": r["p_value"],
                    "p_adjusted": r["p_adjusted"],
                    "drift": r["drift"],
                }
            )
        if not b.get("tests"):
            rows.append(
                {
                    "batch": b["batch"],
                    "n": b["n"],
                    "test": "skipped",
                    "statistic": np.nan,
                    "p_value": np.nan,
                    "p_adjusted": np.nan,
                    "drift": None,
                }
            )
    return pd.DataFrame(rows)


def plot(report: dict[str, Any], path: str | Path, title: str) -> None:
    """The DriftWatch view: MMD statistic per batch against its permutation threshold, and the
    smallest adjusted p-value of each detector family per batch against alpha; drifted batches red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tested = [b for b in report["batches"] if b.get("tests")]
    names = [b["batch"] for b in tested]
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 0.35 * len(names) + 3), 6.5), sharex=True)
    colours = ["tab:red" if b["drift"] else "tab:blue" for b in tested]
    if tested and "mmd" in tested[0]["tests"]:
        ax1.plot(x, [b["tests"]["mmd"]["statistic"] for b in tested], color="0.6", lw=1)
        ax1.scatter(x, [b["tests"]["mmd"]["statistic"] for b in tested], c=colours, zorder=3)
        ax1.plot(
            x,
            [b["tests"]["mmd"]["statistic_threshold"] for b in tested],
            "k--",
            lw=1,
            label=f"permutation threshold (1 - {report['alpha']:g} quantile)",
        )
        ax1.legend(loc="upper left", fontsize=8)
    ax1.set_ylabel("MMD² (embeddings)")
    ax1.set_title(title)
    families = {"mmd": "mmd", "label_shift": "label_shift"}
    for b in tested:
        for k in b["tests"]:
            family = {"count": "detections per image", "cover": "class cover per raster"}.get(k.split("_")[0])
            families.setdefault(k, family or ("band pixels" if "_band_" in k else "image statistics"))
    for fam in dict.fromkeys(families.values()):
        ys = [
            min((t["p_adjusted"] for k, t in b["tests"].items() if families.get(k) == fam), default=np.nan)
            for b in tested
        ]
        ax2.plot(x, -np.log10(np.maximum(ys, 1e-300)), marker="o", label=fam)
    ax2.axhline(-np.log10(report["alpha"]), color="k", ls="--", lw=1, label=f"alpha = {report['alpha']:g}")
    ax2.set_ylabel("-log10 adjusted p")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    for tick, b in zip(ax2.get_xticklabels(), tested, strict=True):
        tick.set_color("tab:red" if b["drift"] else "black")
    ax2.set_xlabel("batch (drifted in red)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run(
    *,
    predictions: str | Path,
    reference: str | Path,
    out: dict[str, str | Path],
    cfg: dict[str, Any],
    title: str,
) -> dict[str, Any]:
    """The drift step: drift.json (per batch and overall), drift.tsv and the DriftWatch plot."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(predictions)
    ref = load_reference(reference)
    counted = count_columns(ref["classes"].astype(str).tolist()) if "counts" in ref else []
    # the predicted class: top1_label (classifiers), label (the windows of a sound campaign)
    label = "top1_label" if "top1_label" in schema.names else "label"
    if "pixels" in ref:  # task semantic: pixel samples and pixels per class of each raster
        counted = [*band_columns(ref["bands"].tolist()), *(f"pixels_{c}" for c in ref["classes"].astype(str))]
    wanted = ["seq", "source", label, "embedding", *STAT_COLUMNS, *counted]
    by = cfg["batch"]["by"]
    if by not in ("chunk", "folder"):
        wanted.append(by)
    cols = [c for c in dict.fromkeys(wanted) if c in schema.names]
    if by not in ("chunk", "folder") and by not in cols:
        raise ValueError(
            f"drift.batch.by: {by!r} is neither chunk, folder nor a column of {predictions} "
            f"({[c for c in schema.names if c != 'embedding']})"
        )
    preds = pd.read_parquet(predictions, columns=cols)
    if label != "top1_label" and label in preds:
        preds["top1_label"] = preds[label]
    report = detect(preds, ref, cfg)
    write_json(report, out["json"])
    write_tsv(batch_rows(report), out["table"])
    plot(report, out["plot"], title)
    drifted = report["overall"]["drifted_batches"]
    log.info(
        "drift: %d of %d tested batches drifted%s",
        len(drifted),
        report["overall"]["tested_batches"],
        f": {', '.join(drifted)}" if drifted else "",
    )
    return report


def check(drift_json: str | Path, policy: str, flag: str | Path) -> None:
    """The on_drift policy: `fail` raises DriftDetected naming the drifted batches; `warn` logs them."""
    report = read_json(drift_json)
    drifted = report["overall"]["drifted_batches"]
    if drifted and policy == "fail":
        raise DriftDetected(
            f"drift detected in {len(drifted)} batch(es) of {drift_json}: {', '.join(drifted)} "
            "(drift.on_drift: fail; set it to warn to continue)"
        )
    if drifted:
        log.warning("drift detected in batch(es): %s (on_drift: warn)", ", ".join(drifted))
    write_json({"drifted_batches": drifted, "policy": policy}, flag)

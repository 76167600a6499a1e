"""Keras backend library: safe loading, cards, preprocessing, class weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:  # the optional extra; `make test` installs it
    pytest.skip("TensorFlow is not installed (pip install '.[keras]')", allow_module_level=True)

from aquaflow.backends import keras_model as kb
from aquaflow.io import write_json

keras = kb.tf_setup(1)


def _lambda_model(path, fn=lambda t: t * 2.0, name: str = "times_two"):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    x = keras.layers.Lambda(fn, name=name)(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    keras.Model(inp, out).save(path)
    return path


# the card of a shared folder that asks for unsafe loading (ignored: only config or flag decide)
UNSAFE_CARD = {
    "format": "keras",
    "arch": "x",
    "classes": ["a", "b"],
    "input_size": 16,
    "normalization": {"preprocess": "scale"},
    "safe_mode": False,
}


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused_by_default_and_the_message_names_the_option(tmp_path, suffix):
    path = _lambda_model(tmp_path / f"m{suffix}")
    with pytest.raises(kb.KerasModelError) as err:
        kb.load_model(path)
    assert "model.safe_mode: false" in str(err.value) and "times_two" in str(err.value)
    assert "Lambda" in str(err.value)
    # the same refusal through the import step (what the workflow runs)
    write_json(UNSAFE_CARD, tmp_path / "model_card.json")
    spec = {"source": "path", "path": str(path), "safe_mode": True}
    with pytest.raises(kb.KerasModelError, match=r"model\.safe_mode"):
        kb.import_model(spec, tmp_path / "out" / "model.keras", tmp_path / "out" / "model_card.json")
    assert not (tmp_path / "out" / "model.keras").exists()
    # explicit opt-in: loads; the card keeps no opt-in, each loader is given the config's setting
    card = kb.import_model(
        {**spec, "safe_mode": False}, tmp_path / "out" / "model.keras", tmp_path / "out" / "card.json"
    )
    assert "safe_mode" not in card
    with pytest.raises(kb.KerasModelError, match=r"model\.safe_mode"):
        kb.KerasPredictor.load(tmp_path / "out" / "model.keras", {**card, "safe_mode": False}, "cpu")
    pred = kb.KerasPredictor.load(tmp_path / "out" / "model.keras", card, "cpu", safe_mode=False)
    probs, feats = pred.predict_numpy(np.full((2, 16, 16, 3), 128, np.uint8))
    assert probs.shape == (2, 2) and feats.shape == (2, 3)


def _touching_lambda_folder(folder, marker):
    """A shared Keras model folder whose Lambda layer touches `marker` when it runs and whose card
    asks for unsafe loading (the proof of concept of the trust-boundaries issue)."""
    folder.mkdir()
    touch = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t * 2.0)[1]")
    _lambda_model(folder / "model.keras", touch, "touches_a_file")
    marker.unlink(missing_ok=True)  # building the model ran it once here
    write_json({**UNSAFE_CARD, "id": "0" * 64}, folder / "model_card.json")
    return folder


def test_a_model_folder_cannot_switch_its_own_safety_off_in_aquaflow_predict(tmp_path):
    from PIL import Image

    from aquaflow import cli

    marker = tmp_path / "lambda_ran"
    folder = _touching_lambda_folder(tmp_path / "shared_model", marker)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(images / f"im{i}.png")
    argv = ["predict", str(images), "--model", str(folder), "-o", str(tmp_path / "out"), "--threads", "1"]
    with pytest.raises(kb.KerasModelError) as err:
        cli.main(argv)
    assert "model.safe_mode: false" in str(err.value) and "--no-safe-mode" in str(err.value)
    assert not marker.exists(), "the Lambda layer's code ran although the card alone asked for it"
    assert not (tmp_path / "out" / "predictions.parquet").exists()
    # the explicit flag is the only way in: then the code does run, and 3 images are predicted
    assert cli.main([*argv, "--no-safe-mode"]) == 0
    assert marker.exists()
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "out" / "predictions.parquet")) == 3


def test_planktonclas_preprocessing_matches_its_formula():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2, 5, 5, 3), dtype=np.uint8)
    mean, std = [100.0, 110.0, 120.0], [30.0, 40.0, 50.0]
    base = {"preprocess": "planktonclas", "mean_rgb": mean, "std_rgb": std}
    centred = x.astype(np.float64) - np.array(mean)
    np.testing.assert_array_equal(
        kb.preprocess(x, {**base, "mode": "tf"}), (centred / 127.5).astype(np.float32)
    )
    np.testing.assert_array_equal(
        kb.preprocess(x, {**base, "mode": "torch"}), (centred / np.array(std)).astype(np.float32)
    )
    np.testing.assert_array_equal(
        kb.preprocess(x, {**base, "mode": "caffe"}), centred[..., ::-1].astype(np.float32)
    )
    app = kb.preprocess(x, {"preprocess": "keras_applications", "module": "mobilenet"})
    np.testing.assert_allclose(app, x / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"classes": []}, "classes"),
        ({"input_size": 8}, "input_size"),
        ({"resize": "crop"}, "resize"),
        ({"normalization": {"preprocess": "magic"}}, "normalization.preprocess"),
        ({"normalization": {"preprocess": "mean_std", "mean": [0.5]}}, "normalization.mean"),
        ({"normalization": {"preprocess": "keras_applications", "module": "nope"}}, "normalization.module"),
    ],
)
def test_card_errors_name_the_key(change, key):
    card = {
        "format": "keras",
        "arch": "x",
        "classes": ["a"],
        "input_size": 32,
        "normalization": {"preprocess": "none"},
    }
    with pytest.raises(kb.KerasModelError, match=key.replace(".", r"\.")):
        kb.validate_card({**card, **change})


def test_planktonclas_folder_needs_its_config_keys(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "dataset_files").mkdir()
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "dataset_files" / "classes.txt").write_text("a\nb\n")
    write_json(
        {"model": {"image_size": 64, "modelname": "Xception"}, "dataset": {}}, tmp_path / "conf" / "conf.json"
    )
    with pytest.raises(kb.KerasModelError, match=r"best_model\.keras"):
        kb.planktonclas_folder(tmp_path)
    (tmp_path / "ckpts" / "best_model.keras").write_bytes(b"")
    with pytest.raises(kb.KerasModelError, match=r"model\.preprocess_mode"):
        kb.planktonclas_folder(tmp_path)


def test_class_weights_are_a_dict_for_keras_fit():
    from aquaflow.backends.keras_train import class_weight_dict

    cfg = {"balancing": "weights", "class_weights": {"b": 2.0}}
    w = class_weight_dict(np.array([0, 0, 0, 1]), ["a", "b"], cfg)
    assert isinstance(w, dict) and set(w) == {0, 1}
    assert w[1] / w[0] == pytest.approx(3 * 2.0)
    assert class_weight_dict(np.array([0, 1]), ["a", "b"], {"balancing": "none", "class_weights": {}}) is None

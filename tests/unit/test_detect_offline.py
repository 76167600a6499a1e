"""Ultralytics offline: no network attempt, nothing written to the home directory, no implicit download.

Each check runs in a fresh interpreter (Ultralytics reads its environment at import) with the test
network guard (tests/netguard/sitecustomize.py) recording any DNS lookup or connect."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

GUARD = REPO / "tests" / "netguard"


def run_guarded(code: str, tmp_path, name: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / f"{name}.net.log"
    home = tmp_path / f"{name}-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_"))}
    env |= {
        "HOME": str(home),
        "PYTHONPATH": f"{GUARD}{os.pathsep}{REPO / 'scripts'}",
        "AQUAFLOW_NETGUARD_LOG": str(log),
    }
    env.pop("XDG_CONFIG_HOME", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    attempts = log.read_text().splitlines() if log.exists() else []
    return proc, attempts


def test_the_guard_sees_what_ultralytics_does_without_setup(tmp_path):
    """Negative control: a plain import probes DNS (the guard records it) and writes settings to HOME."""
    proc, attempts = run_guarded("import ultralytics", tmp_path, "plain")
    assert proc.returncode == 0, proc.stderr
    assert any("getaddrinfo" in a for a in attempts), attempts
    assert (tmp_path / "plain-home/.config/Ultralytics/settings.json").exists()


def test_setup_build_check_data_and_predict_without_network(tmp_path):
    """Training, evaluation and inference run under the same guard in the workflow tests."""
    code = f"""
    import numpy as np
    from aquaflow.backends.yolo import ultra
    from aquaflow.synthetic import scenes
    cfg = ultra.setup({str(tmp_path / "ul")!r})
    data = scenes.write_dataset("fish", {str(tmp_path / "fish")!r}, 2, 1, (64, 64))
    from ultralytics.data.utils import check_det_dataset
    check_det_dataset(str(data))  # fetches Arial.ttf unless a local font stands in
    model = ultra.build({{"family": "yolo11", "size": "n", "weights": None}}, "detect")
    r = model.predict([np.zeros((64, 64, 3), np.uint8)] * 2, imgsz=64, verbose=False)
    assert len(r) == 2
    from aquaflow.data import imaging
    try:
        imaging.decode(b"not an image")
    except imaging.Rejected as e:
        print("REASON", e.reason)  # Ultralytics' PIL patch would make this an import error
    try:
        ultra.build({{"family": "yolo11", "size": "n", "weights": "yolo11n.pt"}}, "detect")
    except ultra.ModelSourceError as e:
        print("REFUSED", e)
    """
    proc, attempts = run_guarded(code, tmp_path, "setup")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts == []
    assert "REASON not_an_image" in proc.stdout
    assert "REFUSED detection.model.weights: yolo11n.pt is not a file on disk" in proc.stdout
    written = [p for p in (tmp_path / "setup-home").rglob("*") if p.is_file() and "matplotlib" not in p.parts]
    assert written == [], "Ultralytics may write nothing to the home directory (matplotlib's cache aside)"
    ul = tmp_path / "ul" / "Ultralytics"
    assert (ul / "settings.json").exists() and (ul / "Arial.ttf").exists()
    import json

    settings = json.loads((ul / "settings.json").read_text())
    assert settings["sync"] is False and settings["mlflow"] is False


@pytest.mark.parametrize("task", ["segment", "obb"])
def test_model_yaml_names(task):
    from aquaflow.backends.yolo import ultra

    assert ultra.model_yaml("n", task) == {"segment": "yolo11n-seg.yaml", "obb": "yolo11n-obb.yaml"}[task]

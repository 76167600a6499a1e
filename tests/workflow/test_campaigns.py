"""Train once, analyse every year: what each config edit reruns, campaigns, given models."""

import copy
import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from aquaflow.data.fetch import package_root
from aquaflow.io import sha256_file
from aquaflow.synthetic.flowcam import perturbed_copies

from ..conftest import run_snakemake, tiny_usecase, trained_copy, write_workdir

pytestmark = pytest.mark.workflow
UC = "config/usecases/flowcam.yaml"


def year(work, name, n, seed):
    """A folder of `n` FlowCam-like crops, as a new year's acquisitions."""
    src = package_root("planktonclas") / "resources" / "demo-images"
    perturbed_copies(src, work / name, n, seed=seed)
    return {"inputs": [{"kind": "folder", "path": name}], "metadata": {"sample_id": f"bpns_{name}"}}


@pytest.fixture(scope="module")
def done(tmp_path_factory, flowcam_trained):
    """A finished run: the tiny model trained in this workdir (by the session: trained_copy) and
    one campaign (2025)."""
    work = trained_copy(flowcam_trained, tmp_path_factory.mktemp("campaigns") / "work")
    uc = tiny_usecase()
    uc["campaigns"] = {"2025": year(work, "y2025", 40, seed=1)}
    write_workdir(work, {"flowcam": uc})
    proc = run_snakemake(work)
    assert "rule train:" not in proc.stdout + proc.stderr  # the session's training was up to date
    return work


def dry_run(work) -> tuple[dict[str, int], str]:
    """Jobs per rule that `snakemake --dry-run` would run now ({} = nothing to do), and its output."""
    proc = run_snakemake(work, "--dry-run")
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}, out
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "all"}, out


def planned(work) -> dict[str, int]:
    """Jobs per rule that `snakemake --dry-run` would run now ({} = nothing to do)."""
    return dry_run(work)[0]


def edited(work, tmp_path, edit):
    """A copy of the finished workdir with one edit of the use-case config."""
    copy_dir = shutil.copytree(work, tmp_path / "edited", symlinks=True)
    uc = yaml.safe_load((copy_dir / UC).read_text())
    edit(uc, copy_dir)
    (copy_dir / UC).write_text(yaml.safe_dump(uc, sort_keys=False))
    return copy_dir


def set_in(path, value):
    def edit(uc, _work):
        *parents, last = path.split(".")
        node = uc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


def more_inputs(uc, work):
    shutil.copytree(work / "y2025", work / "extra")
    uc["campaigns"]["2025"]["inputs"].append({"kind": "folder", "path": "extra"})


def given_model(uc, work):
    shutil.copytree(work / "results/flowcam/model", work / "models/2025")
    uc["model"] = {"source": "path", "path": "models/2025"}


# track_inference: the campaign's MLflow run, redone when its summary or model changes
# export_rocrate records a campaign's provenance: it reruns with any of its outputs
AFTER_MODEL = {
    "infer_shard": 2,
    "infer_gather": 1,
    "export_ecotaxa": 1,
    "export_ecotaxa_bundle": 1,
    "track_inference": 1,
    "export_rocrate": 1,
}
INFERENCE = {"infer_inputs": 1, **AFTER_MODEL, "campaign_summary": 1}
EXPORT = {"export_ecotaxa": 1, "export_ecotaxa_bundle": 1, "export_rocrate": 1}

EDITS = {
    "description": (set_in("description", "a new description"), {}),
    "campaign description": (set_in("campaigns.2025.description", "spring"), {}),
    "campaign inputs": (more_inputs, INFERENCE),
    "export sample id": (set_in("campaigns.2025.metadata.sample_id", "bpns_2025_b"), EXPORT),
    "export class scores": (set_in("export.ecotaxa.class_scores", ["Actinoptychus"]), EXPORT),
    "inference top_k": (set_in("inference.top_k", 2), {**AFTER_MODEL, "campaign_summary": 1}),
    "training lr": (
        set_in("training.lr", 0.0005),
        {"train": 1, "evaluate": 1, **AFTER_MODEL, "campaign_summary": 1},
    ),
    "model source": (given_model, {"import_model": 1, "evaluate": 1, **AFTER_MODEL, "campaign_summary": 1}),
    # a use case's image limit reaches every rule that reads images (and only them: fetch is not)
    "image limit": (
        set_in("limits.max_decoded_mb", 512),
        {"prepare": 1, "train": 1, "evaluate": 1, **INFERENCE},
    ),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_each_edit_reruns_exactly_what_it_changes(done, tmp_path, name):
    edit, expected = EDITS[name]
    jobs, out = dry_run(edited(done, tmp_path, edit))
    assert jobs == expected
    if "train" in jobs:  # the reason is readable: which params changed, no config dump
        assert "Params have changed" in out or "params" in out.lower()
        assert "export" not in re.search(r"rule train:.*?(?=\n\n)", out, re.S).group(0)


def snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_campaign_runs_only_itself(done, tmp_path):
    work = shutil.copytree(done, tmp_path / "next", symlinks=True)
    before = snapshot(work / "results/flowcam/campaigns/2025")
    model = snapshot(work / "results/flowcam/model")
    uc = yaml.safe_load((work / UC).read_text())
    uc["campaigns"]["2026"] = year(work, "y2026", 30, seed=2)
    (work / UC).write_text(yaml.safe_dump(uc, sort_keys=False))
    assert planned(work) == {"infer_inputs": 1, **AFTER_MODEL, "campaign_summary": 1}
    run_snakemake(work)
    assert snapshot(work / "results/flowcam/campaigns/2025") == before  # bytes and mtimes
    assert snapshot(work / "results/flowcam/model") == model
    new = pd.read_parquet(work / "results/flowcam/campaigns/2026/predictions.parquet")
    assert len(new) == 30
    summary = pd.read_csv(work / "results/flowcam/campaigns/summary.tsv", sep="\t")
    totals = summary[(summary["scope"] == "total") & (summary["name"] == "seen")]
    assert dict(zip(totals["campaign"].astype(str), totals["count"], strict=True)) == {"2025": 40, "2026": 30}
    per_class = summary[summary["scope"] == "class"].groupby(summary["campaign"].astype(str))["count"].sum()
    assert per_class.to_dict() == {"2025": 40, "2026": 30}
    assert set(summary["model_id"]) == {new["model_id"].iloc[0]}


def given_workdir(tmp_path, done, model_cfg):
    """A use case with no data and no training: a given model and one campaign."""
    work = tmp_path / "given"
    shutil.copytree(done / "y2025", work / "y2025")
    shutil.copytree(done / "results/flowcam/model", work / "models/published")
    uc = {
        "model": model_cfg,
        "campaigns": {"2025": {"inputs": [{"kind": "folder", "path": "y2025"}]}},
        "inference": copy.deepcopy(tiny_usecase().get("inference", {})),
    }
    return write_workdir(work, {"flowcam": uc})


PREDICTIONS = "results/flowcam/campaigns/2025/predictions.parquet"
CARD = "results/flowcam/model/model_card.json"


def test_given_model_predicts_without_training(done, tmp_path):
    work = given_workdir(tmp_path, done, {"source": "path", "path": "models/published"})
    # what follows the predictions does not depend on where the model came from (a given model
    # through to the EcoTaxa zip: test_no_shared_fs; Keras / YOLO given models to the RO-Crate)
    proc = run_snakemake(work, PREDICTIONS)
    ran = proc.stdout + proc.stderr
    assert "rule train" not in ran and "localrule train" not in ran
    assert not (work / "results/flowcam/model/history.tsv").exists()
    card = json.loads((work / CARD).read_text())
    assert card["id"] == sha256_file(done / "results/flowcam/model/model.safetensors")
    assert card["imported_from"]["source"] == "path"
    ours = pd.read_parquet(work / PREDICTIONS)
    theirs = pd.read_parquet(done / PREDICTIONS)
    assert (ours["model_id"] == card["id"]).all()
    assert ours["top1_label"].tolist() == theirs["top1_label"].tolist()
    assert (ours["top1_prob"] - theirs["top1_prob"]).abs().max() < 1e-6


def test_given_model_pin_and_card_are_checked(done, tmp_path):
    work = given_workdir(tmp_path, done, {"source": "path", "path": "models/published", "sha256": "0" * 64})
    proc = run_snakemake(work, CARD, check=False)  # the model import is what fails
    assert proc.returncode != 0 and "differs from model.sha256" in proc.stdout + proc.stderr
    card_path = work / "models/published/model_card.json"
    card = json.loads(card_path.read_text())
    del card["classes"]
    card_path.write_text(json.dumps(card))
    uc = yaml.safe_load((work / UC).read_text())
    uc["model"].pop("sha256")
    (work / UC).write_text(yaml.safe_dump(uc))
    proc = run_snakemake(work, CARD, check=False)
    assert proc.returncode != 0 and "model card has no 'classes'" in proc.stdout + proc.stderr

"""The FlowCam demo campaign run locally once per pytest run, shared by the test files that read it
(test_standards checks its exports with outside tools, test_no_shared_fs compares a run without a
shared file system with it): one local run instead of one per file."""

from __future__ import annotations

from pathlib import Path

from .conftest import REPO, built_once, run_snakemake, tiny_usecase, trained_copy

DEMO = "results/flowcam/campaigns/demo"


def demo_usecase() -> dict:
    """tiny_usecase() with the demo campaign's sample table and the DwC-A taxonomy table."""
    uc = tiny_usecase()
    uc["campaigns"]["demo"]["samples"] = {"path": str(REPO / "config/samples/flowcam_demo.csv")}
    uc["export"]["dwca"]["taxonomy"] = str(REPO / "config/taxonomy/flowcam.tsv")
    # who ran it and where the release and the organization are published (RO-Crate author,
    # agent, publisher; absolute ids of the rules): test values
    uc["export"]["dwca"].setdefault("eml", {}).update(creator="A. Tester", organization="Test Institute")
    uc["export"]["rocrate"] = {
        "workflow_url": "https://git.example.org/aquaflow/tree/v0",
        "organization_url": "https://institute.example.org/",
    }
    return uc


def demo_done(tmp_path_factory, flowcam_trained: Path) -> Path:
    """A copy of `flowcam_trained` where the whole workflow ran with `demo_usecase()` (the demo
    campaign: predictions, EcoTaxa, DwC-A, RO-Crate), once per pytest run; read-only."""

    def build(work: Path) -> None:
        work.rmdir()  # trained_copy makes it
        trained_copy(flowcam_trained, work, demo_usecase())
        proc = run_snakemake(work)
        assert "rule train:" not in proc.stdout + proc.stderr  # the session's training was up to date

    return built_once(tmp_path_factory, "wf_b_demo_done", build)

import copy

import pytest
import yaml

from aquaflow.config import ConfigError, load_workflow_config, validate

SCHEMAS = "workflow/schemas"


@pytest.fixture
def flowcam(repo):
    return yaml.safe_load((repo / "config/usecases/flowcam.yaml").read_text())


def check(uc, repo):
    return validate(copy.deepcopy(uc), repo / SCHEMAS / "usecase.schema.yaml", "flowcam.yaml")


def test_shipped_configs_validate_and_get_defaults(repo):
    main = yaml.safe_load((repo / "config/config.yaml").read_text())
    import os

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        cfg, ucs = load_workflow_config(main, repo / SCHEMAS)
    finally:
        os.chdir(cwd)
    assert set(ucs) == {"flowcam"}
    uc = ucs["flowcam"]
    assert uc["training"]["optimizer"] == "adamw"
    assert uc["evaluation"]["split"] == "test"  # filled from the schema default
    demo = uc["campaigns"]["demo"]
    assert demo["inputs"] == [
        {"kind": "dataset", "column": "path", "extensions": demo["inputs"][0]["extensions"]}
    ]
    assert uc["model"]["source"] == "train" and uc["model"]["sha256"] is None
    assert cfg["mlflow"]["experiment"] == "aquaflow"


def test_unknown_key_is_named(flowcam, repo):
    flowcam["training"]["epoch"] = 3
    with pytest.raises(ConfigError) as err:
        check(flowcam, repo)
    assert "unknown key 'training.epoch'" in str(err.value)
    assert "epochs" in str(err.value)  # the allowed keys are listed


def test_wrong_type_is_named(flowcam, repo):
    flowcam["training"]["epochs"] = "ten"
    with pytest.raises(ConfigError) as err:
        check(flowcam, repo)
    assert "training.epochs" in str(err.value)
    assert "integer" in str(err.value)


def test_bad_enum_lists_allowed_values(flowcam, repo):
    flowcam["training"]["balancing"] = "oversample"
    with pytest.raises(ConfigError) as err:
        check(flowcam, repo)
    msg = str(err.value)
    assert "training.balancing" in msg and "resample" in msg and "weights" in msg


def test_source_kind_requires_its_keys(flowcam, repo):
    flowcam["source"] = {"kind": "url", "url": "http://example.org/x.zip"}
    with pytest.raises(ConfigError) as err:
        check(flowcam, repo)
    assert "sha256" in str(err.value)


def test_given_model_needs_no_dataset_but_its_own_keys(flowcam, repo):
    given = {"model": {"source": "path", "path": "models/2025"}, "campaigns": flowcam["campaigns"]}
    assert check(given, repo)["model"]["source"] == "path"
    with pytest.raises(ConfigError) as err:
        check({"model": {"source": "mlflow"}}, repo)
    assert "uri" in str(err.value)
    with pytest.raises(ConfigError) as err:
        check({"model": {"source": "train"}}, repo)  # training needs data
    assert "source" in str(err.value) or "dataset" in str(err.value)


def test_campaign_names_and_inputs_are_checked(flowcam, repo):
    flowcam["campaigns"]["bad name"] = {"inputs": [{"kind": "dataset"}]}
    with pytest.raises(ConfigError) as err:
        check(flowcam, repo)
    assert "bad name" in str(err.value)
    del flowcam["campaigns"]["bad name"]
    flowcam["campaigns"]["2026"] = {"inputs": [{"kind": "folder"}]}  # a folder needs its path
    with pytest.raises(ConfigError) as err:
        check(flowcam, repo)
    assert "campaigns.2026.inputs.0" in str(err.value) and "path" in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("max_decoded_mb", 0, "limits.max_decoded_mb"),
        ("max_unpack_ratio", "lots", "limits.max_unpack_ratio"),
        ("max_file_gb", 2, "unknown key 'limits.max_file_gb'"),
    ],
)
def test_an_invalid_limit_names_its_key(flowcam, repo, key, value, needle):
    flowcam["limits"] = {key: value}
    with pytest.raises(ConfigError) as err:
        check(flowcam, repo)
    assert needle in str(err.value)


def test_limits_default_to_the_library_s_and_a_changed_one_keeps_the_others(flowcam, repo):
    from aquaflow.data import limits

    assert check(flowcam, repo)["limits"] == limits.defaults()
    flowcam["limits"] = {"max_decoded_mb": 2048}
    assert check(flowcam, repo)["limits"] == {**limits.defaults(), "max_decoded_mb": 2048}


@pytest.mark.parametrize("name", ["oil_spill", "s2_coast"])
def test_run_configs_name_one_semantic_use_case_with_the_main_defaults(repo, name, monkeypatch):
    """config/runs/<name>.yaml (make oil-spill / s2-coast) is a whole main config: it validates,
    names only its use case, and the keys it leaves out take config/config.yaml's values."""
    monkeypatch.chdir(repo)
    run = yaml.safe_load((repo / f"config/runs/{name}.yaml").read_text())
    cfg, ucs = load_workflow_config(run, repo / SCHEMAS)
    assert list(ucs) == [name] and ucs[name]["task"] == "semantic"
    shipped, _ = load_workflow_config(
        yaml.safe_load((repo / "config/config.yaml").read_text()), repo / SCHEMAS
    )
    assert {k: v for k, v in cfg.items() if k != "usecases"} == {
        k: v for k, v in shipped.items() if k != "usecases"
    }

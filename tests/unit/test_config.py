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
    assert uc["inference"]["inputs"] == [
        {"kind": "dataset", "column": "path", "extensions": uc["inference"]["inputs"][0]["extensions"]}
    ]
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

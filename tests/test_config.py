from pathlib import Path

import pytest

from paretohqd.config import Config, ConfigError, load_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").rglob("*.yaml"))


def test_configs_exist():
    assert CONFIGS, "configs/ holds no YAML"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    assert isinstance(load_config(path), Config)


def test_defaults_and_override():
    cfg = load_config(None, ["select.k=7", "data.sources=[a, b]"])
    assert cfg.select.k == 7 and cfg.data.sources == ["a", "b"]
    assert load_config().select.k == 100


def test_every_problem_reported_at_once(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("select:\n  k: 0\n  layers: -1\n  colour: red\ndata:\n  max_sample_tokens: nope\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "4 problem(s)" in msg
    for key in ("select.k", "select.layers", "select.colour", "data.max_sample_tokens"):
        assert key in msg


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "x.yaml"
    p.write_text("select: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["select.k"])


def test_length_window_checked():
    with pytest.raises(ConfigError, match="min_response_tokens"):
        load_config(None, ["data.min_response_tokens=600"])


def test_morlhf_sft_steps_of_older_configs_load_as_sft_start_steps(tmp_path):
    """`morlhf.sft_steps` became `sft_start.steps` (the SFT model MODPO shares): an older run's
    config.yaml still loads, meaning what it meant, and a null is dropped."""
    p = tmp_path / "old.yaml"
    p.write_text("morlhf:\n  init: sft\n  sft_steps: 7\n")
    cfg = load_config(p)
    assert cfg.sft_start.steps == 7 and "sft_steps" not in cfg.morlhf.model_dump()
    p.write_text("morlhf:\n  sft_steps: null\nsft_start:\n  steps: 3\n")
    assert load_config(p).sft_start.steps == 3
    # MODPO started from the base policy then: an old run's config keeps that, a new config gets the SFT start
    assert load_config(p).modpo.init == "base"
    p.write_text("morlhf:\n  sft_steps: null\nmodpo:\n  init: sft\n")
    assert load_config(p).modpo.init == "sft"
    p.write_text("sft_start:\n  steps: 3\n")
    assert load_config(p).modpo.init == "sft"

from __future__ import annotations

from pathlib import Path

import pytest

from recon.config import ConfigError, RunConfig, apply_overrides, load_config, validate

CONFIGS = sorted((Path(__file__).parent.parent / "data" / "configs").glob("*.*"))


def test_there_are_example_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_validates(path):
    cfg = load_config(RunConfig, path)
    assert cfg.operator.name in {"mri", "mri_multicoil", "ct", "inpainting", "super_resolution"}
    sigmas = cfg.schedule.build()
    assert float(sigmas[-1]) == 0.0


def _base():
    return {
        "operator": {"name": "mri", "img_size": [16, 16]},
        "prior": {"kind": "exact", "path": "p.safetensors"},
        "sampler": {"name": "dds"},
    }


def test_unknown_top_level_key_names_file_field_and_allowed(tmp_path):
    data = _base() | {"bogus": 1}
    with pytest.raises(ConfigError) as e:
        validate(RunConfig, data, source="run.yaml")
    msg = str(e.value)
    assert msg.startswith("run.yaml: bogus: unknown key")
    assert "sampler" in msg and "operator" in msg  # the allowed keys are listed


def test_unknown_nested_key_lists_that_models_fields():
    data = _base()
    data["sampler"] = {"name": "dds", "n_gc": 5}
    with pytest.raises(ConfigError) as e:
        validate(RunConfig, data, source="x.yaml")
    msg = str(e.value)
    assert "x.yaml: sampler.dds.n_gc: unknown key" in msg
    assert "n_cg" in msg and "eta" in msg


def test_unknown_sampler_name_lists_choices():
    data = _base()
    data["sampler"] = {"name": "dsp"}
    with pytest.raises(ConfigError) as e:
        validate(RunConfig, data, source="x.yaml")
    msg = str(e.value)
    assert "x.yaml: sampler" in msg and "'dps'" in msg and "'dds'" in msg


def test_bad_value_names_field():
    data = _base()
    data["operator"] = {"name": "mri", "img_size": [16, 16], "acceleration": 40}
    with pytest.raises(ConfigError, match=r"operator\.mri\.acceleration"):
        validate(RunConfig, data, source="x.yaml")


def test_configs_are_frozen():
    cfg = validate(RunConfig, _base())
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_load_each_format_and_overrides(tmp_path, suffix):
    import json

    import yaml

    data = _base()
    p = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        p.write_text(yaml.safe_dump(data))
    elif suffix == ".json":
        p.write_text(json.dumps(data))
    else:
        p.write_text(
            '[operator]\nname = "mri"\nimg_size = [16, 16]\n[prior]\nkind = "exact"\n'
            'path = "p.safetensors"\n[sampler]\nname = "dds"\n'
        )
    cfg = load_config(RunConfig, p, overrides=["sampler.n_cg=7", "seed=3"])
    assert cfg.sampler.n_cg == 7 and cfg.seed == 3


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("operator: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(RunConfig, bad)
    other = tmp_path / "run.ini"
    other.write_text("x")
    with pytest.raises(ConfigError, match="unknown config format"):
        load_config(RunConfig, other)
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])

"""The config schema: defaults, unknown keys, wrong types, merges and the CLI's error path."""

from __future__ import annotations

import pytest
import yaml

from depthdif import cli
from depthdif.config import ConfigError, deep_merge, expand_years, load_config, months_of


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_fill_every_section(tmp_path):
    config = load_config([write(tmp_path, "c.yaml", {"data_dir": "d"})])
    assert config["data_dir"] == "d"
    assert config["source"]["kind"] == "synthetic"
    assert config["export"]["depth_indices"] == [0, 4, 10, 17]
    assert config["dataset"]["mask_patch_min"] <= config["dataset"]["mask_patch_max"]


def test_shipped_configs_validate(repo_root):
    default = load_config([repo_root / "config" / "config.yaml"])
    glorys = load_config([repo_root / "config" / "config.yaml", repo_root / "config" / "glorys.yaml"])
    assert default["source"]["kind"] == "synthetic"
    assert glorys["source"]["kind"] == "copernicus"
    assert glorys["export"]["patch_size"] == 128
    assert expand_years(glorys["source"]["years"])[0] == 2000
    assert expand_years(glorys["source"]["years"])[-1] == 2025
    # a later file changes only the keys it names
    assert glorys["dataset"]["mask_fraction"] == default["dataset"]["mask_fraction"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"export": {"patch_sise": 32}}, "export.patch_sise"),
        ({"bogus": 1}, "bogus"),
        ({"export": {"patch_size": "big"}}, "export.patch_size"),
        ({"export": {"patch_size": -4}}, "export.patch_size"),
        ({"dataset": {"mask_fraction": 1.2}}, "dataset.mask_fraction"),
        ({"dataset": {"mask_fraction": -0.1}}, "dataset.mask_fraction"),
        ({"source": {"kind": "ftp"}}, "source.kind"),
        ({"variants": ["temp_v2"]}, "variants.0"),
    ],
)
def test_bad_keys_are_named(tmp_path, override, needle):
    with pytest.raises(ConfigError) as err:
        load_config([write(tmp_path, "c.yaml", override)])
    assert needle in str(err.value)


def test_consistency_rules(tmp_path):
    with pytest.raises(ConfigError, match="stride"):
        load_config([], {"export": {"patch_size": 16, "stride": 32}})
    with pytest.raises(ConfigError, match="mask_patch_min"):
        load_config([], {"dataset": {"mask_patch_min": 6, "mask_patch_max": 3}})
    with pytest.raises(ConfigError, match="local_dir"):
        load_config([], {"source": {"kind": "local"}})
    with pytest.raises(ConfigError, match="temp_v1_band"):
        load_config([], {"dataset": {"temp_v1_band": 9}})
    # the synthetic ocean writes thetao and zos only: another name is refused by validate, not after a download
    with pytest.raises(ConfigError, match=r"surface_variables \['zoss'\].*synthetic"):
        load_config([], {"export": {"surface_variables": ["zos", "zoss"]}})
    with pytest.raises(ConfigError, match="export.variable 'so'"):
        load_config([], {"export": {"variable": "so"}})
    assert load_config([], {"export": {"surface_variables": ["zoss"]}, "source": {"kind": "local", "local_dir": "x"}})


def test_deep_merge_keeps_siblings():
    merged = deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    assert merged == {"a": {"b": 1, "c": 3}}


def test_years_and_months():
    assert expand_years("2000-2002") == [2000, 2001, 2002]
    assert expand_years([2011, 2010, 2011]) == [2010, 2011]
    with pytest.raises(ConfigError):
        expand_years("2005-2001")
    config = load_config([], {"source": {"years": [2010], "months": [12, 11]}})
    assert months_of(config) == [(2010, 11), (2010, 12)]


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("export: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config([broken])


def test_cli_reports_bad_key_and_exits_nonzero(tmp_path, capsys):
    path = write(tmp_path, "c.yaml", {"export": {"patch_sise": 32}})
    assert cli.main(["validate", "-c", str(path)]) == 2
    assert "export.patch_sise" in capsys.readouterr().err


def test_cli_set_override(tmp_path, capsys):
    path = write(tmp_path, "c.yaml", {})
    assert cli.main(["validate", "-c", str(path), "--set", "export.patch_size=64", "--set", "seed=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["export"]["patch_size"] == 64
    assert printed["seed"] == 3
    with pytest.raises(ConfigError):
        cli.parse_override("no-equals-sign")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_number_is_refused_naming_its_key(value):
    """JSON Schema's minimum lets NaN through (a new user's .nan noise fraction trained with no noise)."""
    from depthdif.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"dataset\.surface_noise_fraction.*not a finite number"):
        validate_config({"dataset": {"surface_noise_fraction": value}})
    with pytest.raises(ConfigError, match=r"evaluate\.profile_density_factors\[1\]"):
        validate_config({"evaluate": {"profile_density_factors": [1.0, value]}})

"""Load, merge and validate DepthDif configs against the one shared JSON schema."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from depthdif.errors import DepthDifError

SCHEMA_FILE = "config.schema.yaml"


class ConfigError(DepthDifError, ValueError):
    """A config file or key is wrong; the message names it and says what to do."""


def schema_path() -> Path:
    """Path of the schema file shipped inside the package (also used by the Snakefile)."""
    return Path(str(resources.files("depthdif") / SCHEMA_FILE))


def load_schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Merge ``override`` into ``base`` the way Snakemake merges several --configfile files."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def section_defaults(section: str) -> dict:
    """The schema's default of every key of one top-level section (e.g. ``model``).

    Used where settings come from somewhere other than a validated config: a ``model.ckpt`` written before a key
    existed stores the model section without it, and the key then means what the schema says (the schema stays
    the only source of defaults; nothing reads ``.get(key, default)``).
    """
    properties = load_schema()["properties"][section]["properties"]
    return {name: copy.deepcopy(sub["default"]) for name, sub in properties.items() if "default" in sub}


def _with_defaults(validator_class):
    """A validator that fills schema defaults in place (as snakemake.utils.validate(set_default=True))."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_of(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line per error that names the full dotted key the user has to fix."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        prefix = _key_of(error) + "." if error.absolute_path else ""
        unknown = sorted(prefix + str(k) for k in error.instance if k not in known)
        return f"  - unknown key {', '.join(repr(k) for k in unknown)}: not a DepthDif setting (typo?)"
    return f"  - key '{_key_of(error)}': {error.message}"


def validate_config(config: dict, origin: str = "config") -> dict:
    """Validate ``config`` in place, filling defaults; raise ConfigError naming the bad key."""
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [_describe(e) for e in errors[:10]]
        raise ConfigError(
            f"invalid {origin}:\n" + "\n".join(lines) + f"\nFix these keys (every key, its type and default "
            f"is listed in {schema_path()}) and run again."
        )
    check_finite(config)
    check_consistency(config)
    return config


def check_finite(value, key: str = "") -> None:
    """Refuse NaN and infinity anywhere in the config: JSON Schema's ``minimum``/``maximum`` let NaN through
    (every comparison with it is false), so ``.nan`` in YAML would pass as any number and silently switch a
    setting off (e.g. ``dataset.surface_noise_fraction: .nan`` meant no noise at all).

    Args:
        value: the config or a part of it.
        key: the dotted key of ``value``, for the message.

    Raises:
        ConfigError: naming the first key whose value is not a finite number.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"key '{key}': {value} is not a finite number; give a real value (YAML .nan/.inf are "
                          "refused).")
    if isinstance(value, dict):
        for name, item in value.items():
            check_finite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_finite(item, f"{key}[{i}]")


def check_consistency(config: dict) -> None:
    """Rules the schema cannot express."""
    export, dataset = config["export"], config["dataset"]
    if export["stride"] > export["patch_size"]:
        raise ConfigError(
            f"export.stride ({export['stride']}) is larger than export.patch_size ({export['patch_size']}): "
            "pixels between tiles would never be exported; use stride <= patch_size."
        )
    if dataset["mask_patch_min"] > dataset["mask_patch_max"]:
        raise ConfigError(
            f"dataset.mask_patch_min ({dataset['mask_patch_min']}) > dataset.mask_patch_max "
            f"({dataset['mask_patch_max']}); swap them."
        )
    if config["source"]["kind"] == "local" and not config["source"]["local_dir"]:
        raise ConfigError("source.kind is 'local' but source.local_dir is not set: give the folder of *.nc files.")
    if config["source"]["kind"] == "copernicus":
        check_copernicus_variables(config)
    if config["source"]["kind"] == "synthetic":
        check_synthetic_variables(config)
    if "eo_4band" in config["variants"] and len(export["depth_indices"]) < 2:
        raise ConfigError(
            "variant eo_4band needs export.depth_indices with the surface first and at least one deeper level."
        )
    if dataset["temp_v1_band"] >= len(export["depth_indices"]):
        raise ConfigError(
            f"dataset.temp_v1_band ({dataset['temp_v1_band']}) is not one of the "
            f"{len(export['depth_indices'])} exported channels (export.depth_indices)."
        )


# what depthdif.sources.synthetic writes (its test checks the files hold exactly these)
SYNTHETIC_VARIABLES = ("thetao",)
SYNTHETIC_SURFACE_VARIABLES = ("zos",)


def check_synthetic_variables(config: Mapping) -> None:
    """The synthetic ocean writes ``thetao`` and the surface variable ``zos`` only: export.variable and
    export.surface_variables must name those (caught here, by ``depthdif validate``, not after the download).

    Args:
        config: a config.

    Raises:
        ConfigError: naming the unknown variable, the key and what the synthetic ocean offers.
    """
    export = config["export"]
    if export["variable"] not in SYNTHETIC_VARIABLES:
        raise ConfigError(f"export.variable '{export['variable']}': the synthetic ocean (source.kind: synthetic) "
                          f"writes {list(SYNTHETIC_VARIABLES)} only.")
    unknown = [name for name in export.get("surface_variables") or () if name not in SYNTHETIC_SURFACE_VARIABLES]
    if unknown:
        raise ConfigError(f"export.surface_variables {unknown}: the synthetic ocean (source.kind: synthetic) writes "
                          f"the surface variables {list(SYNTHETIC_SURFACE_VARIABLES)} only; remove the others or use "
                          "source.kind copernicus or local.")


def check_copernicus_variables(config: Mapping) -> None:
    """A Copernicus subset (source.copernicus.bbox set) asks for source.copernicus.variables only: they must
    include export.variable and every export.surface_variables. Whole files (bbox null) hold every variable of
    the dataset; the download checks each file has them when it arrives.

    Args:
        config: a config, or ``depthdif.download.download_settings`` of one.

    Raises:
        ConfigError: naming the variables missing from source.copernicus.variables and both keys.
    """
    copernicus, export = config["source"]["copernicus"], config["export"]
    if copernicus.get("bbox") is None:
        return
    wanted = [export["variable"], *(export.get("surface_variables") or ())]
    missing = [name for name in wanted if name not in copernicus["variables"]]
    if missing:
        raise ConfigError(
            f"source.copernicus.variables {list(copernicus['variables'])} lacks {missing} of export.variable "
            f"'{export['variable']}' / export.surface_variables {list(export.get('surface_variables') or [])}: "
            "the subset would not contain them; add them to source.copernicus.variables."
        )


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def load_config(paths: Iterable[str | Path], overrides: Mapping | None = None) -> dict:
    """Read config files in order (later ones win, deep-merged), apply overrides, validate."""
    config: dict = {}
    names = []
    for path in paths:
        config = deep_merge(config, read_yaml(path))
        names.append(str(path))
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, origin="config from " + (", ".join(names) or "defaults"))


def expand_years(years: list[int] | str) -> list[int]:
    """`[2010, 2012]` stays a list of years; `'2000-2025'` becomes every year of that range."""
    if isinstance(years, str):
        first, last = (int(part) for part in years.split("-"))
        if last < first:
            raise ConfigError(f"source.years range '{years}' ends before it starts")
        return list(range(first, last + 1))
    return sorted(set(years))


def months_of(config: Mapping) -> list[tuple[int, int]]:
    """The (year, month) pairs the source covers, in time order."""
    source = config["source"]
    return [(y, m) for y in expand_years(source["years"]) for m in sorted(set(source["months"]))]


def get_path(config: Mapping, *parts: str, root: str = "data_dir") -> Path:
    return Path(config[root]).joinpath(*parts)


def config_subset(config: Mapping, reads: Mapping[str, Iterable[str] | None]) -> dict:
    """The part of ``config`` a stage reads, for its rule's ``params`` and for the stage itself.

    A rule passes this as ``params`` (Snakemake reruns a job whose params changed) and its script hands the
    stage exactly this dict, so a stage that reads a key its params do not carry fails at once instead of
    missing the reruns that key should trigger.

    Args:
        config: the validated run config.
        reads: top-level key -> None (all of it) or the keys of that section the stage reads.

    Returns:
        A new dict holding copies of those keys.

    Raises:
        KeyError: ``reads`` names a key the config does not have.
    """
    subset: dict = {}
    for key, keys in reads.items():
        value = config[key]
        subset[key] = copy.deepcopy(value) if keys is None else {name: copy.deepcopy(value[name]) for name in keys}
    return subset

"""`depthdif` command line: one subcommand per pipeline stage, the same functions Snakemake calls."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path

import yaml

from depthdif import __version__
from depthdif.config import ConfigError, deep_merge, load_config
from depthdif.logs import setup_logging

log = logging.getLogger("depthdif")
DEFAULT_CONFIG = Path("config/config.yaml")


def parse_override(text: str) -> dict:
    """`export.patch_size=64` -> {"export": {"patch_size": 64}} (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. export.patch_size=64), got '{text}'")
    value = yaml.safe_load(raw)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _config_from(args: argparse.Namespace) -> dict:
    paths = args.configfile or ([DEFAULT_CONFIG] if DEFAULT_CONFIG.exists() else [])
    overrides: dict = {}
    for item in args.set or []:
        overrides = deep_merge(overrides, parse_override(item))
    return load_config(paths, overrides)


def cmd_validate(config: dict, args: argparse.Namespace) -> None:
    print(yaml.safe_dump(config, sort_keys=False))


def cmd_download(config: dict, args: argparse.Namespace) -> None:
    from depthdif.download import run_download

    print(run_download(config))


def cmd_export(config: dict, args: argparse.Namespace) -> None:
    from depthdif.export import export_patches

    manifest = Path(config["data_dir"]) / "raw" / "manifest.csv"
    print(export_patches(config, manifest, workers=args.workers))


def cmd_split(config: dict, args: argparse.Namespace) -> None:
    from depthdif.split import split_index

    print(split_index(config, Path(config["data_dir"]) / "patches" / "patch_index_with_paths.csv"))


def cmd_train(config: dict, args: argparse.Namespace) -> None:
    from depthdif.train import run_training

    print(run_training(config, args.variant, Path(config["results_dir"]) / args.variant))


def cmd_evaluate(config: dict, args: argparse.Namespace) -> None:
    from depthdif.evaluate import run_evaluation

    out = Path(config["results_dir"]) / args.variant
    print(run_evaluation(config, args.variant, out / "model.ckpt", out / "eval"))


def cmd_reconstruct(config: dict, args: argparse.Namespace) -> None:
    from depthdif.reconstruct import reconstruct_file

    print(
        reconstruct_file(
            args.checkpoint,
            args.observations,
            args.output,
            surface=args.surface,
            ensemble_size=args.ensemble_size,
            steps=args.steps,
            date=args.date,
        )
    )


def parse_date(text: str) -> int:
    """The ``--date`` of `depthdif reconstruct`.

    Args:
        text: ``2010-07-16`` (or ``20100716``).

    Returns:
        YYYYMMDD, e.g. 20100716.

    Raises:
        argparse.ArgumentTypeError: not a calendar day in that form (argparse prints it as a usage error).
    """
    digits = text.strip().replace("-", "")
    try:
        if len(digits) != 8 or not digits.isdigit():
            raise ValueError(text)
        stamp = datetime.datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--date expects YYYY-MM-DD (e.g. 2010-07-16), got '{text}'") from None
    return int(stamp.strftime("%Y%m%d"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthdif",
        description="Reconstruct dense subsurface ocean temperature from sparse observations.",
    )
    parser.add_argument("--version", action="version", version=f"depthdif {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--configfile", nargs="+", type=Path,
        help="config files merged in order (default: config/config.yaml); it takes every word up to the next "
             "option, so give it after the positional arguments",
    )
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one key, e.g. seed=3")
    common.add_argument("--log", type=Path, help="also write the log to this file")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("validate", cmd_validate, "validate the config and print it with every default filled in")
    add("download", cmd_download, "fetch or generate the raw monthly NetCDF files and their manifest")
    add("export", cmd_export, "cut patches to .npy and write the patch index").add_argument(
        "--workers", type=int, help="parallel processes (default: export.workers)"
    )
    add("split", cmd_split, "assign geographic windows to train/val")
    for name, func, text in (
        ("train", cmd_train, "train the diffusion model of one variant"),
        ("evaluate", cmd_evaluate, "score the model and the baselines on the val split"),
    ):
        add(name, func, text).add_argument("variant", choices=["temp_v1", "eo_4band"])
    rec = add("reconstruct", cmd_reconstruct, "apply a trained model to a NetCDF of sparse observations")
    rec.add_argument("checkpoint", type=Path, help="model.ckpt written by training")
    rec.add_argument("observations", type=Path, help="NetCDF with thetao, NaN where unobserved")
    rec.add_argument("output", type=Path, help="NetCDF to write")
    rec.add_argument("--surface", type=Path, help="NetCDF of the surface (EO) field, for eo_4band")
    rec.add_argument("--ensemble-size", type=int, default=8)
    rec.add_argument("--steps", type=int, default=25, help="DDIM steps")
    rec.add_argument("--date", type=parse_date, metavar="YYYY-MM-DD",
                     help="date of the observations, for a file that states none (no time coordinate, no "
                          "date attribute, no date in its name); a file stating another date is refused")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    try:
        config = _config_from(args)
        args.func(config, args)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # library errors already name the file/key; a traceback would only bury that message
        log.error("%s: %s", type(err).__name__, err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

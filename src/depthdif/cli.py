"""`depthdif` command line: one subcommand per pipeline stage, the same functions Snakemake calls.

Errors: a :class:`~depthdif.errors.DepthDifError` (an input, file or setting DepthDif cannot use) or an
``OSError`` (a missing file, a full disk) ends the command with ``depthdif <command>: error: <message>`` on
stderr and exit status 1 (2 for a config error, like argparse's usage errors); ``--debug`` shows their
traceback instead. Any other exception is a bug in DepthDif: its traceback is printed, then a line asking to
report it, and the status is 70 (the conventional "internal software error").
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path

import yaml

from depthdif import __version__
from depthdif.config import ConfigError, deep_merge, load_config
from depthdif.errors import DepthDifError
from depthdif.layout import ALL_VARIANTS
from depthdif.logs import UNCAUGHT_LOGGER, setup_logging

log = logging.getLogger("depthdif")
DEFAULT_CONFIG = Path("config/config.yaml")
EXIT_ERROR = 1  # a DepthDifError or OSError: the message says what to change
EXIT_CONFIG = 2  # a ConfigError; argparse uses 2 for a wrong command line too
EXIT_BUG = 70  # any other exception: a bug in DepthDif
STORED_BASELINES = object()  # `depthdif evaluate --baselines` without a file: the one `depthdif baselines` writes
# commands that read or write the data and results folders: they never run on the schema's defaults by
# accident (those differ from config/config.yaml, e.g. dataset.temp_v1_band 0 vs 3)
DATA_COMMANDS = ("download", "export", "split", "train", "baselines", "evaluate")


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
    """The validated config of a command: ``-c`` files, else ./config/config.yaml, then ``--set``.

    Args:
        args: the parsed command line (``configfile``, ``set``, ``command``).

    Returns:
        The config with every default filled in.

    Raises:
        ConfigError: no ``-c`` and no config/config.yaml here for a command of :data:`DATA_COMMANDS`, or a
            config file or key is wrong.
    """
    overrides: dict = {}
    for item in args.set or []:
        overrides = deep_merge(overrides, parse_override(item))
    sets = f" + {len(args.set)} --set override(s)" if args.set else ""
    if args.configfile:
        paths = list(args.configfile)
        log.info("config: %s%s", ", ".join(str(path) for path in paths), sets)
    elif DEFAULT_CONFIG.exists():
        paths = [DEFAULT_CONFIG]
        log.info("config: %s (no -c given)%s", DEFAULT_CONFIG.resolve(), sets)
    elif args.command in DATA_COMMANDS:
        raise ConfigError(
            f"no config: -c was not given and there is no {DEFAULT_CONFIG} in {Path.cwd()}; the schema's "
            "defaults alone are not the default run (e.g. dataset.temp_v1_band 0, not 3). Run from the "
            "repository root or pass -c FILE (an empty file runs on the schema's defaults on purpose)."
        )
    else:
        paths = []
        log.info("config: schema defaults only (no -c given, no %s in %s)%s", DEFAULT_CONFIG, Path.cwd(), sets)
    return load_config(paths, overrides)


def cmd_validate(config: dict, args: argparse.Namespace) -> None:
    print(yaml.safe_dump(config, sort_keys=False))


def cmd_download(config: dict, args: argparse.Namespace) -> None:
    from depthdif.download import run_download

    print(run_download(config))


def cmd_export(config: dict, args: argparse.Namespace) -> None:
    from depthdif.export import export_patches
    from depthdif.layout import layout_of

    print(export_patches(config, layout_of(config).manifest, workers=args.workers))


def cmd_split(config: dict, args: argparse.Namespace) -> None:
    from depthdif.layout import layout_of
    from depthdif.split import split_index

    print(split_index(config, layout_of(config).patch_index))


def cmd_train(config: dict, args: argparse.Namespace) -> None:
    from depthdif.layout import layout_of
    from depthdif.train import run_training

    print(run_training(config, args.variant, layout_of(config).variant_dir(args.variant)))


def cmd_baselines(config: dict, args: argparse.Namespace) -> None:
    from depthdif.evaluation.baseline_predictions import run_baselines
    from depthdif.layout import layout_of

    # the input and output of rule baselines_<variant>
    layout = layout_of(config)
    print(run_baselines(config, args.variant, layout.split_index, layout.baseline_predictions(args.variant)))


def cmd_evaluate(config: dict, args: argparse.Namespace) -> None:
    from depthdif.evaluation.protocol import run_evaluation
    from depthdif.layout import layout_of

    layout = layout_of(config)
    # --baselines alone: the file `depthdif baselines` (rule baselines_<variant>) writes; none: computed in place
    baselines = layout.baseline_predictions(args.variant) if args.baselines is STORED_BASELINES else args.baselines
    print(run_evaluation(config, args.variant, layout.model_ckpt(args.variant), layout.eval_dir(args.variant),
                         index_csv=layout.split_index, baselines=baselines))


def cmd_reconstruct(config: None, args: argparse.Namespace) -> None:
    from depthdif.reconstruction.gridded import reconstruct_file

    print(
        reconstruct_file(
            args.checkpoint,
            args.observations,
            args.output,
            surface=args.surface,
            ensemble_size=args.ensemble_size,
            steps=args.steps,
            date=args.date,
            seed=args.seed,
            fill_values=tuple(args.fill_value),
            grid=args.grid,
            device=args.device,
        )
    )


def positive_int(text: str) -> int:
    """An option that counts something (members, steps, workers).

    Args:
        text: the option's value.

    Returns:
        The value, at least 1.

    Raises:
        argparse.ArgumentTypeError: not an integer >= 1 (argparse prints it as a usage error).
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got '{text}'")
    return value


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
    debug_help = "on an error, show the traceback instead of a one-line message"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log", type=Path, help="also write the log to this file")
    # SUPPRESS: a subcommand's own default would overwrite `depthdif --debug <command>`
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    configured = argparse.ArgumentParser(add_help=False)
    configured.add_argument(
        "-c", "--configfile", nargs="+", type=Path,
        help="config files merged in order (default: config/config.yaml of the current folder); it takes every "
             "word up to the next option, so give it after the positional arguments",
    )
    configured.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one key, e.g. seed=3")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str, config: bool = True) -> argparse.ArgumentParser:
        parents = [common, configured] if config else [common]
        p = sub.add_parser(name, parents=parents, help=help_text, description=help_text)
        p.set_defaults(func=func, uses_config=config)
        return p

    add("validate", cmd_validate, "validate the config and print it with every default filled in")
    add("download", cmd_download, "fetch or generate the raw monthly NetCDF files and their manifest")
    add("export", cmd_export, "cut patches to .npy and write the patch index").add_argument(
        "--workers", type=positive_int, help="parallel processes (default: export.workers)"
    )
    add("split", cmd_split, "assign geographic windows to train/val")
    parsers = {}
    for name, func, text in (
        ("train", cmd_train, "train the diffusion model of one variant"),
        ("baselines", cmd_baselines, "run every baseline on the evaluation's val passes and store their "
                                     "predictions ({results_dir}/<variant>/eval/baselines/predictions.npz)"),
        ("evaluate", cmd_evaluate, "score the model and the baselines on the val split"),
    ):
        parsers[name] = add(name, func, text)
        parsers[name].add_argument("variant", choices=list(ALL_VARIANTS))
    parsers["evaluate"].add_argument(
        "--baselines", nargs="?", type=Path, const=STORED_BASELINES, metavar="FILE",
        help="score the baselines from the predictions `depthdif baselines` stored (give it after the variant; "
             "without FILE: the file `depthdif baselines <variant>` writes, "
             "{results_dir}/<variant>/eval/baselines/predictions.npz); a file computed from other val observations "
             "is refused. Default: compute them here",
    )
    # no -c/--set: the model's settings (network, bands, depths, first guess) are those stored in model.ckpt,
    # and the sampling options below are the only ones a run chooses
    rec = add("reconstruct", cmd_reconstruct, "apply a trained model to sparse observations (gridded or profiles)",
              config=False)
    rec.add_argument("checkpoint", type=Path, help="model.ckpt written by training")
    rec.add_argument("observations", type=Path,
                     help="either a gridded NetCDF with thetao (or another sea temperature) on (depth,) latitude, "
                          "longitude, NaN or its fill value where unobserved, and an ocean_mask variable (1 = "
                          "ocean, 0 = land) for temp_v1; or profiles: a NetCDF of N_PROF x N_LEVELS (Argo, EN4: "
                          "LATITUDE, LONGITUDE, JULD, TEMP on DEPTH or PRES) or a .csv with one row per level "
                          "(latitude, longitude, time, depth or pressure, temperature), binned onto --grid")
    rec.add_argument("output", type=Path, help="NetCDF to write")
    rec.add_argument("--surface", type=Path,
                     help="NetCDF of the surface (EO) field, for eo_4band (for profiles also the grid, without --grid)")
    rec.add_argument("--grid", type=Path,
                     help="profiles only: NetCDF whose latitude/longitude grid the profiles are binned onto, with an "
                          "ocean_mask or a temperature field whose NaN is land (e.g. a GLORYS12 month or "
                          "results/<variant>/eval/reconstruction.nc); default: --surface")
    rec.add_argument("--ensemble-size", type=positive_int, default=8,
                     help="members averaged into the mean; their spread is the std (default: %(default)s)")
    rec.add_argument("--steps", type=positive_int, default=25, help="sampling steps per member (default: %(default)s)")
    rec.add_argument("--device", choices=["auto", "gpu", "cuda", "mps", "cpu"], default="auto",
                     help="where to sample: auto = a GPU if torch sees one, else the CPU (default: %(default)s)")
    rec.add_argument("--seed", type=int, default=0,
                     help="seed of the sampler's noise: the same inputs and seed give the same output "
                          "(default: %(default)s)")
    rec.add_argument("--fill-value", type=float, action="append", default=[], metavar="VALUE",
                     help="a value (in the files' units) that means 'not observed' in a file that stores it "
                          "without a _FillValue, e.g. 9999; repeatable")
    rec.add_argument("--date", type=parse_date, metavar="YYYY-MM-DD",
                     help="date of the observations, for a file that states none (no time coordinate, no "
                          "date attribute, no date in its name); a file stating another date is refused")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``depthdif`` command.

    Args:
        argv: the arguments after ``depthdif``; None reads ``sys.argv``.

    Returns:
        The exit status: 0, :data:`EXIT_ERROR`, :data:`EXIT_CONFIG` or :data:`EXIT_BUG`.

    Raises:
        SystemExit: a wrong command line (status 2), ``--help`` or ``--version``.
        Exception: any error of the command, with ``--debug``.
    """
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    try:
        config = _config_from(args) if args.uses_config else None
        args.func(config, args)
    except Exception as err:
        if args.debug:
            raise
        return report_error(args, err)
    return 0


def report_error(args: argparse.Namespace, err: Exception) -> int:
    """Tell the user why a command stopped; the exit status says what kind of stop it was.

    Args:
        args: the parsed command line (``command``, ``log``).
        err: what stopped the command.

    Returns:
        :data:`EXIT_CONFIG` for a ConfigError, :data:`EXIT_ERROR` for another DepthDifError or an OSError,
        :data:`EXIT_BUG` for anything else.
    """
    prefix = f"depthdif {args.command}: error:"
    if isinstance(err, DepthDifError | OSError):
        # the message names the file or key and what to do; a traceback would only bury it
        message = str(err) if not isinstance(err, OSError) or not err.filename else f"{err.strerror}: {err.filename}"
        print(f"{prefix} {message}", file=sys.stderr)
        if args.log:  # the rule/job log must hold the reason too (the file handler only: stderr has it)
            logging.getLogger(UNCAUGHT_LOGGER).error("%s %s", prefix, message)
        return EXIT_CONFIG if isinstance(err, ConfigError) else EXIT_ERROR
    log.critical("%s %s: %s", prefix, type(err).__name__, err, exc_info=err)
    print(f"{prefix} this is a bug in DepthDif, please report it with the traceback above "
          f"(depthdif {__version__})", file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())

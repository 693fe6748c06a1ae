"""The `depthdif` command line: errors as one line and an exit status, the config it says it used, its options."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import depthdif
from depthdif import cli
from depthdif.baselines import BaselineUnavailable
from depthdif.config import ConfigError
from depthdif.errors import DepthDifError
from depthdif.models.module import BatchContractError, CheckpointError

REPO = Path(__file__).resolve().parents[1]
# the exception classes that are deliberately not DepthDifErrors (docs/decisions.md, issue 13)
NOT_USER_ERRORS = {BaselineUnavailable}


def depthdif_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a depthdif module (all modules imported)."""
    for info in pkgutil.walk_packages(depthdif.__path__, "depthdif."):
        importlib.import_module(info.name)
    found = set()
    for name, module in list(sys.modules.items()):
        if name == "depthdif" or name.startswith("depthdif."):
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, BaseException)
                        and value.__module__.startswith("depthdif")):
                    found.add(value)
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def test_every_deliberate_error_is_a_depthdif_error_and_keeps_its_builtin_base():
    classes = depthdif_exceptions()
    names = {cls.__name__ for cls in classes}
    assert {"ConfigError", "ExportError", "CheckpointError", "BatchContractError", "MaskError"} <= names
    assert len(classes) >= 20
    for cls in classes:
        if cls is DepthDifError:
            continue
        assert issubclass(cls, DepthDifError) != (cls in NOT_USER_ERRORS), cls
        builtins = [base for base in cls.__mro__ if base.__module__ == "builtins" and base not in (
            Exception, BaseException, object)]
        assert builtins, f"{cls} lost its built-in base (existing `except ValueError:` etc. would miss it)"


def test_old_except_clauses_still_catch_and_messages_are_unchanged():
    from depthdif.export import ExportError
    from depthdif.models.module import NonFiniteLossError

    with pytest.raises(RuntimeError):
        raise ExportError("x")
    with pytest.raises(FloatingPointError):
        raise NonFiniteLossError("x")
    with pytest.raises(KeyError) as caught:
        raise BatchContractError("the batch lacks 'eo'")
    assert isinstance(caught.value, DepthDifError)
    assert str(caught.value) == "the batch lacks 'eo'"  # not KeyError's quoted repr


# ---------------------------------------------------------------------------------------------- errors


def test_a_depthdif_error_is_one_line_and_status_1(tmp_path, capsys):
    missing = tmp_path / "model.ckpt"
    assert cli.main(["reconstruct", str(missing), str(tmp_path / "o.nc"), str(tmp_path / "out.nc")]) == 1
    err = capsys.readouterr().err
    assert f"depthdif reconstruct: error: model checkpoint {missing} does not exist" in err
    assert "Traceback" not in err


def test_a_config_error_is_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("export: {patch_sise: 32}\n")
    assert cli.main(["validate", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "depthdif validate: error:" in err and "export.patch_sise" in err
    assert "Traceback" not in err


def test_a_missing_file_is_status_1_without_traceback(monkeypatch, capsys):
    def missing(config, args):
        raise FileNotFoundError(2, "No such file or directory", "data/raw/x.nc")

    monkeypatch.setattr(cli, "cmd_validate", missing)
    assert cli.main(["validate", "-c", str(REPO / "config" / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "depthdif validate: error: No such file or directory: data/raw/x.nc" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path, where):
    args = ["reconstruct", str(tmp_path / "model.ckpt"), str(tmp_path / "o.nc"), str(tmp_path / "out.nc")]
    with pytest.raises(CheckpointError, match="does not exist"):
        cli.main(["--debug", *args] if where == "before" else [*args, "--debug"])


def test_a_bug_keeps_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    def broken(config, args):
        return {}["band"]

    monkeypatch.setattr(cli, "cmd_validate", broken)
    assert cli.main(["validate", "-c", str(REPO / "config" / "config.yaml")]) == cli.EXIT_BUG == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and "'band'" in err
    assert err.strip().splitlines()[-1].startswith("depthdif validate: error: this is a bug in DepthDif, please "
                                                     "report it with the traceback")
    with pytest.raises(KeyError):
        cli.main(["--debug", "validate", "-c", str(REPO / "config" / "config.yaml")])


def test_the_log_file_gets_the_error_line(tmp_path, capsys):
    log_file = tmp_path / "logs" / "reconstruct.log"
    code = cli.main(["reconstruct", str(tmp_path / "model.ckpt"), str(tmp_path / "o.nc"), str(tmp_path / "out.nc"),
                     "--log", str(log_file)])
    assert code == 1
    assert "depthdif reconstruct: error: model checkpoint" in log_file.read_text()
    assert capsys.readouterr().err.count("does not exist") == 1  # stderr has it once


def test_a_lightning_checkpoint_is_named_as_such(tmp_path, capsys):
    last = tmp_path / "results" / "temp_v1" / "train" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {"net.w": torch.zeros(2)}, "pytorch-lightning_version": "2.5.0", "global_step": 120,
                "epoch": 3}, last)
    (tmp_path / "results" / "temp_v1" / "model.ckpt").write_bytes(b"")
    assert cli.main(["reconstruct", str(last), str(tmp_path / "o.nc"), str(tmp_path / "out.nc")]) == 1
    err = capsys.readouterr().err
    assert "Lightning training checkpoint" in err and "step 120" in err
    assert f"use {tmp_path / 'results' / 'temp_v1' / 'model.ckpt'}" in err
    assert "format_version" not in err


# ---------------------------------------------------------------------------------------------- config


def test_a_data_command_without_a_config_stops_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command in (["download"], ["export"], ["split"], ["train", "temp_v1"], ["baselines", "temp_v1"],
                    ["evaluate", "eo_4band"]):
        assert cli.main(command) == 2, command
        err = capsys.readouterr().err
        assert f"depthdif {command[0]}: error: no config" in err
        assert "config/config.yaml" in err and "-c FILE" in err and "temp_v1_band" in err
    assert list(tmp_path.iterdir()) == []


def test_the_config_used_is_logged(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate"]) == 0
    captured = capsys.readouterr()
    assert "config: schema defaults only" in captured.err
    assert yaml.safe_load(captured.out)["dataset"]["temp_v1_band"] == 0  # what the line warns about

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("dataset: {temp_v1_band: 2}\n")
    assert cli.main(["validate", "--set", "seed=4"]) == 0
    captured = capsys.readouterr()
    assert f"config: {tmp_path / 'config' / 'config.yaml'} (no -c given) + 1 --set override(s)" in captured.err
    assert yaml.safe_load(captured.out)["dataset"]["temp_v1_band"] == 2

    other = tmp_path / "other.yaml"
    other.write_text("")  # an empty file: the schema's defaults, on purpose
    assert cli.main(["validate", "-c", str(other)]) == 0
    assert f"config: {other}" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- reconstruct


def test_reconstruct_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["reconstruct", "--help"])
    assert caught.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--ensemble-size ENSEMBLE_SIZE" in text and "(default: 8)" in text
    assert "(default: 25)" in text
    assert "--seed SEED" in text and "(default: 0)" in text
    assert "--configfile" not in text and "--set" not in text


@pytest.mark.parametrize("extra", [["-c", "config/config.yaml"], ["--set", "seed=3"], ["--ensemble-size", "0"],
                                   ["--steps", "-1"]])
def test_reconstruct_refuses_options_it_would_ignore(tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["reconstruct", "m.ckpt", "o.nc", "out.nc", *extra])
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_config_errors_are_depthdif_errors():
    with pytest.raises(DepthDifError):
        cli.parse_override("no-equals-sign")
    assert issubclass(ConfigError, ValueError)


# ------------------------------------------------------------------------------------ baselines, evaluate
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def tiny_run(root: Path) -> tuple[list[str], dict]:
    """The command-line options of a tiny synthetic run writing under ``root``, and its config."""
    from depthdif.config import load_config

    sets = {"data_dir": str(root / "data"), "results_dir": str(root / "results")}
    options = ["-c", str(TINY)] + [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    return options, load_config([TINY], sets)


def test_baselines_and_evaluate_call_the_rules_functions_on_the_layouts_files(tmp_path, monkeypatch, capsys):
    from depthdif.evaluation import baseline_predictions, protocol
    from depthdif.layout import layout_of

    calls = []
    monkeypatch.setattr(baseline_predictions, "run_baselines",
                        lambda *args, **kwargs: calls.append(("baselines", args, kwargs)) or args[3])
    monkeypatch.setattr(protocol, "run_evaluation",
                        lambda *args, **kwargs: calls.append(("evaluate", args, kwargs)) or args[3] / "metrics.csv")
    options, config = tiny_run(tmp_path)
    layout = layout_of(config)
    stored = layout.baseline_predictions("eo_4band")  # the output of rule baselines_eo_4band (test_baselines_rule)

    assert cli.main(["baselines", "eo_4band", *options]) == 0
    assert calls.pop() == ("baselines", (config, "eo_4band", layout.split_index, stored), {})
    assert capsys.readouterr().out.strip() == str(stored)

    evaluated = (config, "eo_4band", layout.model_ckpt("eo_4band"), layout.eval_dir("eo_4band"))
    assert cli.main(["evaluate", "eo_4band", *options]) == 0  # as before: the baselines computed in place
    assert calls.pop() == ("evaluate", evaluated, {"index_csv": layout.split_index, "baselines": None})
    assert cli.main(["evaluate", "eo_4band", "--baselines", *options]) == 0
    assert calls.pop() == ("evaluate", evaluated, {"index_csv": layout.split_index, "baselines": stored})
    other = tmp_path / "other.npz"
    assert cli.main(["evaluate", "eo_4band", "--baselines", str(other), *options]) == 0
    assert calls.pop() == ("evaluate", evaluated, {"index_csv": layout.split_index, "baselines": other})


def test_evaluate_scores_the_stored_baselines_and_refuses_other_ones(tmp_path, capsys):
    from test_evaluate import checkpoint

    from depthdif.layout import layout_of

    options, config = tiny_run(tmp_path)
    layout = layout_of(config)
    for command in (["download"], ["export"], ["split"], ["baselines", "temp_v1"]):
        assert cli.main([*command, *options]) == 0, capsys.readouterr().err
    assert layout.baseline_predictions("temp_v1").is_file()
    checkpoint(config, "temp_v1", layout.model_ckpt("temp_v1"))  # untrained, on a first guess fitted here
    capsys.readouterr()

    assert cli.main(["evaluate", "temp_v1", "--baselines", *options]) == 0, capsys.readouterr().err
    metrics = layout.eval_metrics("temp_v1")
    assert capsys.readouterr().out.strip() == str(metrics)
    assert {"oi", "idw", "climatology"} <= set(pd.read_csv(metrics)["method"])

    # other observations than the stored predictions saw: refused, nothing written
    metrics.unlink()
    assert cli.main(["evaluate", "temp_v1", "--baselines", *options, "--set", "evaluate.mask_fractions=[0.5]"]) == 1
    err = capsys.readouterr().err
    assert "depthdif evaluate: error: baselines file" in err and "does not match this evaluation" in err
    assert "`depthdif baselines temp_v1`" in err and "Traceback" not in err
    assert not metrics.exists()

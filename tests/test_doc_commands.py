"""Documented commands put a Snakemake target before ``--configfile``, and that form runs.

Snakemake reads every word after ``--configfile`` up to the next option as a config file, so
``snakemake --configfile a.yaml b.yaml split`` reads ``split`` as a third config file and stops with a
traceback; ``snakemake split --configfile a.yaml b.yaml`` is the form that works.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# every place a user copies a command from: README, docs, config comments, profiles, workflow comments
DOCUMENTED = sorted(
    [REPO / "README.md", REPO / "Snakefile", *REPO.glob("docs/*.md"), *REPO.glob("config/*.yaml"),
     *REPO.glob("profiles/*/config.yaml"), *REPO.glob("workflow/rules/*.smk")]
)
# the words after --configfile, up to an option, the end of a code span or a comment
CONFIGFILE_WORDS = re.compile(r"--configfile((?:\s+[^\s`#-][^\s`]*)+)")
CONFIG_FILE_NAME = re.compile(r"\.(ya?ml|json)$")


def misplaced_targets(text: str) -> list[str]:
    """Words read as config files in the ``snakemake ... --configfile ...`` commands of ``text``.

    Args:
        text: a documentation or config file.

    Returns:
        ``'<line number>: <word>'`` for each word after a ``--configfile`` of a snakemake command that is
        not a config file name (a target, most likely).
    """
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if "snakemake" not in line:
            continue
        for match in CONFIGFILE_WORDS.finditer(line):
            found += [f"{number}: {word}" for word in match.group(1).split()
                      if not CONFIG_FILE_NAME.search(word)]
    return found


def test_the_check_finds_a_target_after_the_config_files():
    assert misplaced_targets("    snakemake --profile p --configfile a.yaml b.yaml split") == ["1: split"]
    assert misplaced_targets("`snakemake --configfile a.yaml train_eo_4band -n`") == ["1: train_eo_4band"]
    assert misplaced_targets("    snakemake split --configfile a.yaml b.yaml -n  # a.yaml: x") == []
    assert misplaced_targets("`snakemake --cores 2 --configfile a.yaml run1.yaml` (run1.yaml: x)") == []


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_put_the_target_first(path):
    assert misplaced_targets(path.read_text()) == [], (
        f"{path}: a target after --configfile is read as a config file; write `snakemake <target> "
        "--configfile ...`"
    )


def test_the_documented_form_runs(tmp_path):
    command = [sys.executable, "-m", "snakemake", "split", "-n", "-s", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "--cores", "1", "--configfile", str(REPO / "config" / "config.yaml"),
               str(REPO / "tests" / "configs" / "tiny.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "split" in result.stdout and "train_eo_4band" not in result.stdout

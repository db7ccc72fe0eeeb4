"""The `riposte` console script: registered, installed, and each command exactly its `python -m` form."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from server import cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "riposte"  # where pip put the console script of this environment
ENV = {**os.environ, "COLUMNS": "100"}  # argparse wraps help to the terminal's width: the same for both forms


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)


def test_the_console_script_is_registered_by_the_distribution():
    (script,) = entry_points(group="console_scripts", name="riposte")
    assert script.value == "server.cli:main" and script.dist.name == cli.DISTRIBUTION
    meta = distribution(cli.DISTRIBUTION).metadata
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["Version"] == pyproject["version"] == cli.version()
    assert SpecifierSet(meta["Requires-Python"]) == SpecifierSet(pyproject["requires-python"])  # installed = source


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_runs_its_packages_own_parser(name, capsys):
    import importlib

    command = cli.COMMANDS[name]
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    ours = capsys.readouterr().out
    assert ours.startswith(f"usage: riposte {name} ["), ours  # named as it was called
    with pytest.raises(SystemExit):  # the package's own parser gives the same help
        prog = "riposte" if command.prefix else f"riposte {name}"
        importlib.import_module(f"{command.package}.__main__").main([*command.prefix, "--help"], prog=prog)
    assert capsys.readouterr().out.split() == ours.split()


def test_corpus_commands_are_reachable_both_ways(capsys):
    for argv in (["corpus", "stats", "--help"], ["prepare", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        out = capsys.readouterr().out
        assert out.startswith(f"usage: riposte {' '.join(argv[:-1])} [") and "--sentence-case" in out


def test_build_help_is_the_markov_packages_help():
    ours, theirs = run([str(SCRIPT), "build", "--help"]), run([sys.executable, "-m", "markov", "build", "--help"])
    assert ours.returncode == theirs.returncode == 0
    assert "--by-speaker" in ours.stdout
    # The same help, word for word; only the program's name (and so the wrapping of the usage lines) differs.
    assert ours.stdout.replace("riposte build", "python -m markov build").split() == theirs.stdout.split()


def test_errors_and_exit_status_are_the_python_m_forms(tmp_path):
    ours = run([str(SCRIPT), "sample", str(tmp_path / "none")])
    theirs = run([sys.executable, "-m", "markov", "sample", str(tmp_path / "none")])
    assert ours.returncode == theirs.returncode == 1 and ours.stderr == theirs.stderr and "error:" in ours.stderr
    ours = run([str(SCRIPT), "train"])  # a required flag is missing: argparse's usage error
    assert ours.returncode == 2 and "one of the arguments --dump --default is required" in ours.stderr


def test_an_unknown_command_or_none_exits_2_with_a_message(capsys):
    for argv in (["frobnicate"], [], ["--frob"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("usage: riposte") and "riposte: error:" in err, err
    cli_err = run([str(SCRIPT), "frobnicate"])
    assert cli_err.returncode == 2 and "invalid choice: 'frobnicate'" in cli_err.stderr


def test_the_installed_script_lists_every_command_and_its_version():
    shown = run([str(SCRIPT), "--help"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    for name, command in cli.COMMANDS.items():
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        assert command.help in " ".join(lines[at:at + 2]), name  # a name too long for the column wraps once
    version = run([str(SCRIPT), "--version"])
    assert version.returncode == 0 and version.stdout == f"riposte {cli.version()}\n"

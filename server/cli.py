"""`riposte COMMAND ...`: one console script for the project; each command is exactly its `python -m` form.

    riposte serve | chat | index              python -m server serve | chat | index
    riposte build | sample | replies          python -m markov build | sample | replies
    riposte prepare                           python -m reranker prepare
    riposte corpus clean | stats              python -m corpus clean | stats
    riposte train | eval | first-stage | plot python -m reranker train | eval | first-stage | plot

The arguments after the command go untouched to that package's `main(argv)`, so its flags, help, errors and exit
status are the `python -m` form's own; only its usage line names it `riposte` (`usage: riposte build ...`).
Packages load only when their command runs, so `riposte --help` stays quick (no torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version

DISTRIBUTION = "riposte-dialogue"  # the name on PyPI (`riposte` there is another project); pyproject.toml sets it


@dataclass(frozen=True)
class Command:
    """A `riposte` command: the package whose `__main__.main(argv)` runs it and the words put before the arguments."""

    package: str
    prefix: tuple[str, ...]
    help: str


COMMANDS = {
    "serve": Command("server", ("serve",), "run the HTTP API over a model dir"),
    "chat": Command("server", ("chat",), "chat in the terminal"),
    "index": Command("server", ("index",), "build or grow a persona's reply index"),
    "build": Command("markov", ("build",), "build a Markov writer from text, chats or subtitles"),
    "sample": Command("markov", ("sample",), "print candidates from a Markov writer"),
    "replies": Command("markov", ("replies",), "print the words a Markov writer learned people answer words with"),
    "prepare": Command("reranker", ("prepare",), "prepare a dump into token shards for training"),
    "corpus": Command("corpus", (), "read dumps: clean, stats"),
    "train": Command("reranker", ("train",), "train an editor (--default: the embedded default)"),
    "eval": Command("reranker", ("eval",), "evaluate an editor beside the baselines"),
    "first-stage": Command("reranker", ("first-stage",), "give a saved editor a first stage"),
    "plot": Command("reranker", ("plot",), "draw a training run's curves as a PNG"),
}


def version() -> str:
    """The installed distribution's version: pyproject.toml is the one place it is written."""
    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed; `pip install -e .` from the checkout)"


def build_parser() -> argparse.ArgumentParser:
    """The top level only (help, --version, the command's name); each command parses its own arguments."""
    by_package: dict[str, list[str]] = {}
    for name, command in COMMANDS.items():
        by_package.setdefault(command.package, []).append(name)
    same = "; ".join(f"{', '.join(names)} = python -m {package}" for package, names in by_package.items())
    parser = argparse.ArgumentParser(
        prog="riposte", description="riposte, a generate-and-rerank dialogue engine.",
        epilog=f"Each command is its `python -m` form, with the same options and exit status: {same}. "
               "`riposte COMMAND --help` shows a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def run(name: str, args: list[str]) -> int:
    """Run one command with its arguments through its package's `main(argv)`; the exit status it gives."""
    command = COMMANDS[name]
    main = importlib.import_module(f"{command.package}.__main__").main
    # Usage lines then read `riposte build ...` (`riposte corpus clean ...`), not `python -m markov build ...`.
    prog = "riposte" if command.prefix else f"riposte {name}"
    return main([*command.prefix, *args], prog=prog) or 0  # markov's main returns None on success, as `python -m markov` exits 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `riposte` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return run(argv[0], argv[1:])
    # --help, --version, no command or an unknown one: argparse prints and exits (0 for help, 2 for a usage error)
    args, rest = build_parser().parse_known_args(argv)
    return run(args.command, rest)


if __name__ == "__main__":
    sys.exit(main())

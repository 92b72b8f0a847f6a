"""`recall`: the one command-line entry point. It only wires sub-commands; each lives in its own module."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cli import (
    artifact_commands,
    data_commands,
    demo_command,
    evaluate_command,
    loop_command,
    recommend_command,
    service_commands,
    train_command,
)
from contract import __version__
from contract.errors import DataError

COMMAND_MODULES = (data_commands, train_command, recommend_command, evaluate_command, artifact_commands,
                   loop_command, service_commands, demo_command)
USAGE_ERROR = 2


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None: an unset option whose value is chosen elsewhere (for the log, by
    the config file), which its help says."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class RecallParser(argparse.ArgumentParser):
    """Every command's help shows each option's default; sub-commands are built with the same class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = RecallParser(prog="recall", description="Near-line generative candidate generation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn bad input into one clear line on stderr and exit code 2 (never a traceback)."""
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what `recall train --nproc` runs again
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except DataError as error:
        if os.environ.get("RANK", "0") == "0":  # under a launcher every rank reads the same input: rank 0 says it
            print(f"recall: error: {error}", file=sys.stderr)  # noqa: T201
        return USAGE_ERROR
    except OSError as error:  # a path that cannot be read or written: the file and the reason, not a traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"recall: error: {where}{error.strerror or error}", file=sys.stderr)  # noqa: T201
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

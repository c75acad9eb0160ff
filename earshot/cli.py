"""The ``earshot`` command: one subcommand per routine job.

Each subcommand lives in its own module with ``add_arguments(name, parser)`` and
``run(name, args) -> int``, and is imported only when used, so ``earshot submit`` never pays
for importing librosa.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from earshot.terminal import silence_broken_pipe

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("earshot.analyze_cmd", "analyse audio files locally, no queue"),
    "dev": ("earshot.service_cmd", "API + workers for every queue (embedded defaults)"),
    "serve": ("earshot.service_cmd", "the HTTP API alone"),
    "worker": ("earshot.service_cmd", "a worker pool for some or all queues"),
    "migrate": ("earshot.service_cmd", "create or upgrade the job store schema"),
    "warmup": ("earshot.service_cmd", "compile the analysis's numba code into the JIT cache"),
    "submit": ("earshot.submit_cmd", "send files and folders to the API, collect results"),
    "status": ("earshot.submit_cmd", "show one or more jobs"),
    "fetch": ("earshot.submit_cmd", "download results of finished jobs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earshot", description="earshot audio analysis")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(name, sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        code = int(module.run(args.command, args) or 0)
        # What is still buffered goes out now, while a closed pipe can still be caught here.
        sys.stdout.flush()
    except BrokenPipeError:
        # `earshot analyze --json DIR | head`: the reader has what it wanted, no traceback.
        return silence_broken_pipe()
    return code


if __name__ == "__main__":
    sys.exit(main())

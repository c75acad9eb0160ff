"""The ``earshot`` command: one subcommand per routine job.

Each subcommand lives in its own module with ``add_arguments(name, parser)`` and
``run(name, args) -> int``, and is imported only when used, so ``earshot submit`` never pays
for importing librosa.
"""

from __future__ import annotations

import argparse
import importlib
import os
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


# The native thread pools numpy, scipy and numba may start (OpenBLAS, OpenMP, MKL, numba's).
NATIVE_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def limit_native_threads() -> None:
    """One native thread per process unless the operator chose otherwise: must run before
    numpy is imported (OpenBLAS reads its variable when it loads).

    A worker's parallelism is its pool processes (``--concurrency``, one per core). OpenBLAS
    otherwise starts a thread per core in every process, and its threads spin between calls:
    on 2 cores with 2 pool processes an analyze task of a 5-second clip used 142 ms of CPU
    instead of 69 (scripts/bench/overhead.py), time the other process needed. Children
    (`earshot dev`'s API and workers, Celery's pool) inherit the variables.
    """
    for name in NATIVE_THREAD_VARS:
        os.environ.setdefault(name, "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earshot", description="earshot audio analysis")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(name, sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    limit_native_threads()
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

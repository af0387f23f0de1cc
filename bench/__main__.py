"""Run the benchmarks: `python -m bench` runs them all, `python -m bench outbox` runs one.

A benchmark is a module `bench/bench_<name>.py` with `async def run() -> list[Figure]`.
Only figures (one JSON line each) reach stdout; anything else a benchmark prints goes to stderr.
Exits 1 when a figure misses its target or a benchmark fails, 2 on an unknown name, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO, cast

import bench
from bench.figures import Figure, emit

log = logging.getLogger("bench")

_PREFIX = "bench_"

Benchmark = Callable[[], Awaitable[list[Figure]]]


def available() -> list[str]:
    """Names of the benchmarks, from the `bench_*` modules of this package."""
    return sorted(
        info.name.removeprefix(_PREFIX)
        for info in pkgutil.iter_modules(bench.__path__)
        if info.name.startswith(_PREFIX)
    )


def load(name: str) -> Benchmark:
    module = importlib.import_module(f"bench.{_PREFIX}{name}")
    run = getattr(module, "run", None)
    if not callable(run):
        raise TypeError(f"bench/{_PREFIX}{name}.py has no `async def run()`")
    return cast(Benchmark, run)


async def run_all(names: list[str], out: TextIO) -> bool:
    """Run the benchmarks one after another; True when every figure is ok."""
    all_ok = True
    for name in names:
        log.info("benchmark %s: starting", name)
        started = time.perf_counter()
        try:
            figures = await load(name)()
        except Exception:
            log.exception("benchmark %s failed", name)
            all_ok = False
            continue
        for figure in figures:
            emit(figure, out)
            if not figure.ok:
                log.error(
                    "%s missed its target: ratio %.3f, target %s",
                    figure.bench,
                    figure.ratio,
                    figure.as_dict()["target"],
                )
                all_ok = False
        log.info("benchmark %s: done in %.1f s", name, time.perf_counter() - started)
    return all_ok


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run Mailer's benchmarks.")
    parser.add_argument(
        "names", nargs="*", metavar="name", help=f"benchmarks to run (default: all): {', '.join(names)}"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in names]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names) or 'none'}")
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("BENCH_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("aio_pika", "aiormq", "faststream", "shared.db"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = sys.stdout
    # Only figures go to stdout: a stray print in a benchmark or a library lands on stderr.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            ok = asyncio.run(run_all(args.names or names, out))
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

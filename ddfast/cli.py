"""The ``ddfast`` command line. Subcommands: ``info`` (what loaded and why not) and ``bench``
(runs the benchmarks in bench/ from a source checkout). Distillation commands arrive with the
methods (ddfast distill / eval / buffer)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def _info(_args) -> int:
    from .info import main

    main()
    return 0


def _bench(args) -> int:
    script = BENCH_DIR / f"bench_{args.op}.py"
    if not script.exists():
        print(f"ddfast bench: {script} not found; benchmarks run from a source checkout of ddfast", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *args.rest])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ddfast", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, backends and why any did not load").set_defaults(func=_info)
    bench = sub.add_parser("bench", help="run a benchmark of bench/ (source checkout)")
    bench.add_argument("op", choices=["grad_distance"], help="which op to benchmark")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark script")
    bench.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))

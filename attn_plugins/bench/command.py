"""The command line every packaged benchmark shares: --quick, --seed, --threads, --json."""

from __future__ import annotations

import argparse


def bench_parser(prog: str, description: str, quick_help: str) -> argparse.ArgumentParser:
    """An argument parser with the options of every benchmark; a benchmark may add its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON (the default)")
    return parser

"""The command line every packaged benchmark shares: --quick, --seed, --threads, --json."""

from __future__ import annotations

import argparse
import os


def bench_parser(prog: str, description: str, quick_help: str) -> argparse.ArgumentParser:
    """An argument parser with the options of every benchmark; a benchmark may add its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON (the default)")
    return parser


def user_env() -> dict[str, str]:
    """The environment a user's command runs in: one torch thread, and Python's own bytecode cache.

    ``PYTHONDONTWRITEBYTECODE`` (set on some CI machines) makes every fresh process compile the ~4,000 modules
    of torch, transformers and shap again: 7.6 s of the command measured here; Python caches them by default.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "OMP_NUM_THREADS": "1"}

"""How fast the command line answers: --help, --version and the early one-line errors, as fresh processes.

Each case runs the installed ``attn-plugins`` command (or ``python -m attn_plugins``) in a new process,
``repeats`` times, and keeps the median wall time, beside the time of a bare ``python -c pass`` (the
interpreter's own start-up, which no change here can remove). The goals: --help, --version and
``explain --help`` within 0.5 s; a missing ``--model`` path and an output that cannot be written reported
within 1 s. ``heavy_modules`` lists what building the parser imported of torch, transformers and shap
(nothing, when the parser is as light as it should be).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .command import bench_parser, user_env

HEAVY = ("torch", "transformers", "shap", "scipy", "sklearn", "pandas", "bertviz")
GOALS_S = {"help": 0.5, "version": 0.5, "explain_help": 0.5, "missing_model": 1.0, "unwritable_output": 1.0}


def command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m attn_plugins``."""
    script = Path(sys.executable).parent / "attn-plugins"
    if script.exists():
        return [str(script)]
    found = shutil.which("attn-plugins")
    return [found] if found else [sys.executable, "-m", "attn_plugins"]


def cases(tmp: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (arguments, expected exit status); paths under ``tmp`` that do not exist."""
    return {
        "help": (["--help"], 0),
        "version": (["--version"], 0),
        "explain_help": (["explain", "--help"], 0),
        "missing_model": (["explain", "a text", "--model", str(tmp / "no-such-model")], 2),
        "unwritable_output": (["explain", "a text", "-o", str(tmp / "no-such-dir" / "page.html")], 2),
    }


def shown(args: list[str], tmp: Path) -> str:
    """The command as the table shows it: the temporary directory as TMP."""
    return " ".join(["attn-plugins", *(repr(a) if " " in a else a for a in args)]).replace(str(tmp), "TMP")


def time_process(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, exit status, stderr) of one fresh process."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - start, done.returncode, done.stderr


def heavy_modules(env: dict[str, str]) -> list[str]:
    """The heavy libraries imported by building the parser (a fresh process)."""
    code = (
        "import sys, json; from attn_plugins.cli import build_parser; build_parser(); "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


def run(quick: bool = False, seed: int = 0, repeats: int = 7) -> dict[str, Any]:
    """Median wall seconds of each case over ``repeats`` fresh processes, the goals, and the parser's heavy imports."""
    del seed  # nothing random here; accepted like every benchmark's
    n = 2 if quick else repeats
    env = user_env()
    base = command()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        named = cases(Path(tmp))
        python: list[float] = []
        seen: dict[str, list[tuple[float, int, int]]] = {name: [] for name in named}
        for _ in range(n):  # round by round, so a busy moment of a shared machine falls on every case alike
            python.append(time_process([sys.executable, "-c", "pass"], env)[0])
            for name, (args, _) in named.items():
                seconds, code, err = time_process(base + args, env)
                seen[name].append((seconds, code, len(err.strip().splitlines())))
        for name, (args, status) in named.items():
            times = [t for t, _, _ in seen[name]]
            codes = {c for _, c, _ in seen[name]}
            lines = {k for _, _, k in seen[name]}
            median = statistics.median(times)
            rows.append(
                {
                    "case": name,
                    "command": shown(args, Path(tmp)),
                    "median_s": round(median, 3),
                    "min_s": round(min(times), 3),
                    "exit_status": sorted(codes),
                    "expected_status": status,
                    "stderr_lines": sorted(lines),
                    "goal_s": GOALS_S[name],
                    "met": median <= GOALS_S[name] and codes == {status},
                }
            )
    return {
        "benchmark": "cli",
        "command": " ".join(Path(base[0]).name if i == 0 else a for i, a in enumerate(base)),
        "repeats": n,
        "python_startup_median_s": round(statistics.median(python), 3),
        "heavy_modules_after_build_parser": heavy_modules(env),
        "rows": rows,
        "all_met": all(r["met"] for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser("attn-plugins bench cli", __doc__.splitlines()[0], "2 repeats instead of 7")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick, seed=args.seed), indent=2))


if __name__ == "__main__":
    main()

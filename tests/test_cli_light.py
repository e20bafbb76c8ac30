"""The command line answers at once: building the parser and the early one-line errors import no heavy library.

Speed itself is measured by ``attn-plugins bench cli``; here each case runs in a fresh interpreter and
checks ``sys.modules`` afterwards, so an import of torch, transformers or shap at parse time fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "shap", "scipy", "sklearn", "bertviz")

# Runs main(argv) and prints [exit status, heavy modules imported]; --help exits through SystemExit.
_PROBE = """
import json, sys
from attn_plugins.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, [m for m in {heavy!r} if m in sys.modules]]))
"""


def run_fresh(*argv: str) -> tuple[int, list[str], str]:
    """(exit status, heavy modules imported, stderr) of ``main(argv)`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=list(HEAVY)), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    code, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    return code, heavy, proc.stderr


def test_building_the_parser_imports_nothing_heavy():
    code = "import sys, json; from attn_plugins.cli import build_parser; build_parser(); print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(proc.stdout))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["explain", "--help"], ["compare", "--help"]])
def test_help_and_version_import_nothing_heavy(argv):
    code, heavy, _ = run_fresh(*argv)
    assert code == 0 and heavy == []


def test_a_missing_model_path_is_one_line_before_torch(tmp_path):
    missing = tmp_path / "no-such-model"
    for argv in (
        ["explain", "a text", "--model", str(missing), "-o", str(tmp_path / "r.html")],
        ["capture", "a text", "--model", str(missing), "-o", str(tmp_path / "r.attn")],
        ["compare", "a text", "--model", str(missing)],
        ["demo", "--model", str(missing), "-o", str(tmp_path / "d.html")],
    ):
        code, heavy, err = run_fresh(*argv)
        assert code == 2 and heavy == [], (argv, heavy)
        assert err.strip().splitlines() == [f"attn-plugins: error: model path {str(missing)!r} does not exist"]


def test_an_unwritable_output_is_one_line_before_torch(tmp_path):
    out = tmp_path / "no-such-dir" / "r.html"
    code, heavy, err = run_fresh("explain", "a text", "-o", str(out))
    assert code == 2 and heavy == []
    assert err.strip().splitlines() == [
        f"attn-plugins: error: cannot write {out}: its directory {out.parent} does not exist"
    ]


def test_the_corpus_options_are_checked_before_torch(tmp_path):
    code, heavy, err = run_fresh("explain", "a text", "--input", str(tmp_path / "in.jsonl"))
    assert code == 2 and heavy == [] and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["explain", "a text", "--max-new-tokens", "0"], "positive"),
        (["explain", "a text", "--contrast", "a", "--contrast-token", "b"], "not both"),
        (["explain", "--input", "in.jsonl", "--out", "run", "--max-new-tokens", "-1"], "positive"),
    ],
)
def test_the_generation_options_are_checked_before_torch(argv, needle):
    code, heavy, err = run_fresh(*argv)
    assert code == 2 and heavy == [] and len(err.strip().splitlines()) == 1 and needle in err, err

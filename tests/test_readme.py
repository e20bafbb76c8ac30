"""README.md stays true: its Python examples run verbatim, its lists match the generated docs, CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from helpers.doc_examples import python_blocks, run_blocks

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_examples_run_verbatim(tmp_path, monkeypatch):
    blocks = python_blocks(README)
    assert len(blocks) >= 2, "README.md lost its python examples"
    monkeypatch.chdir(tmp_path)
    for got, want in run_blocks(blocks, {"__name__": "__readme__"}, "README.md"):
        assert got == want
    assert (tmp_path / "head_view.html").exists() and (tmp_path / "last_layer.png").exists()
    assert "Can this view be trusted?" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_supported_types_match_the_generated_architecture_table():
    doc = (ROOT / "docs" / "architectures.md").read_text(encoding="utf-8")
    header = next(line for line in doc.splitlines() if line.startswith("| model type"))
    rows = doc.split(header, 1)[1].splitlines()[1:]
    generated = [r.split("|")[1].strip() for r in rows if r.startswith("| ")]
    block = re.search(r"<!-- architectures:.*?-->\n(.*?)<!-- /architectures -->", README, flags=re.S)
    assert block, "README.md lost its list of supported architectures"
    listed = [t.strip() for t in block.group(1).replace("\n", " ").split(",")]
    assert listed == generated
    assert len(generated) >= 25


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    # The line that runs the tests (its exit status is kept while the wheel check finishes beside it).
    ci_command = next(line.split(" || ")[0].strip() for line in ci.splitlines() if line.startswith("python -m pytest"))
    bash_blocks = [b.strip() for b in code_blocks("bash")]
    assert ci_command in bash_blocks, f"{ci_command!r} is not a command block of README.md"
    assert "bash .ci/run" in bash_blocks
    assert "torch==2.13.0" in ci


def test_performance_rows_are_the_generated_ones():
    doc = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8").splitlines()
    section = README.split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    data_rows = [r for r in rows if not r.startswith(("| model |", "| tokens |", "| explainer |"))]
    assert len(data_rows) >= 8
    for row in data_rows:
        assert row in doc, f"README row not in docs/performance.md: {row}"

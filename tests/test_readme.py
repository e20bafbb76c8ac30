"""README.md stays true: its Python example runs verbatim and its test command is the one CI runs."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_example_runs_verbatim(tmp_path, monkeypatch):
    blocks = code_blocks("python")
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
        # every `print(x)  # value` line must print what its comment says (up to a ':' explanation)
        printed = out.getvalue().splitlines()
        expected = [
            m.group(1).split(": ")[0].strip() for m in re.finditer(r"^print\(.*\)\s*#\s*(.*)$", block, flags=re.M)
        ]
        assert len(printed) == len(expected)
        for got, want in zip(printed, expected):
            assert got.strip() == want, (got, want)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")][-1].strip()
    bash_blocks = [b.strip() for b in code_blocks("bash")]
    assert ci_command in bash_blocks, f"{ci_command!r} is not a command block of README.md"
    assert "bash .ci/run" in bash_blocks
    assert "torch==2.13.0" in ci

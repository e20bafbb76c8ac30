"""docs/plugins.md works as written: its Python blocks run in order as one plugin module."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from pathlib import Path

import attn_plugins as ap

DOC = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text(encoding="utf-8")


def test_plugin_guide_code_runs_and_prints_what_it_says():
    blocks = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
    assert len(blocks) >= 4
    module = types.ModuleType("docs_plugin_example")
    sys.modules[module.__name__] = module
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            for block in blocks:
                exec(compile(block, "docs/plugins.md", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    # every `print(x)  # value: explanation` prints exactly `value`
    code = "\n".join(blocks)
    expected = [
        m.group(1).split(": ")[0].strip() for m in re.finditer(r"^print\(.*\)[ \t]+#[ \t]*(.*)$", code, flags=re.M)
    ]
    printed = out.getvalue().splitlines()
    assert len(printed) == len(expected)
    for got, want in zip(printed, expected):
        assert got.strip() == want, (got, want)

    names = {(i.kind, i.name): i.distribution for i in ap.plugins()}
    assert names.get(("adapter", "toy_attention")) == "<local>"
    assert names.get(("method", "attention_received")) == "<local>"

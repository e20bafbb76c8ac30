"""docs/plugins.md works as written: its Python blocks run in order as one plugin module."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from helpers.doc_examples import python_blocks, run_blocks

import attn_plugins as ap

DOC = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text(encoding="utf-8")


def test_plugin_guide_code_runs_and_prints_what_it_says():
    blocks = python_blocks(DOC)
    assert len(blocks) >= 4
    module = types.ModuleType("docs_plugin_example")
    sys.modules[module.__name__] = module
    try:
        pairs = run_blocks(blocks, module.__dict__, "docs/plugins.md")
    finally:
        del sys.modules[module.__name__]
    for got, want in pairs:
        assert got == want

    names = {(i.kind, i.name): i.distribution for i in ap.plugins()}
    assert names.get(("adapter", "toy_attention")) == "<local>"
    assert names.get(("method", "attention_received")) == "<local>"

"""The documentation site (mkdocs.yml): the strict build passes, covers every public name, loads nothing
from the network, and fails on a missing docstring or a broken link (checked on a damaged copy)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import attn_plugins as ap

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _build(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=ENV)


def test_strict_build_passes_and_the_site_is_offline_safe(tmp_path: Path) -> None:
    proc = _build(ROOT / "mkdocs.yml", tmp_path / "site", ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pages = {
        p.relative_to(tmp_path / "site").as_posix(): p.read_text("utf-8") for p in (tmp_path / "site").rglob("*.html")
    }
    everything = "".join(pages.values())
    assert "fonts.googleapis" not in everything and "fonts.gstatic" not in everything
    # No page loads a script or a stylesheet from another host.
    assert not re.findall(r'<(?:script|link)[^>]+(?:src|href)="https?://[^"]+\.(?:js|css)', everything)
    reference = "".join(v for k, v in pages.items() if k.startswith("reference/"))
    index = (ROOT / "docs" / "reference" / "index.md").read_text("utf-8")
    for name in ap.__all__:  # each public name is on the overview (linked, so the strict build resolved it)
        assert f"`ap.{name}`" in index or f'id="attn_plugins.errors.{name}"' in reference, name
    for guide in ("architecture", "plugins", "architectures", "performance", "scale"):
        assert f"{guide}/index.html" in pages


def test_strict_build_fails_on_a_missing_docstring_and_a_broken_link(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "attn_plugins", tmp_path / "attn_plugins", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    texts = tmp_path / "attn_plugins" / "corpus" / "texts.py"
    source = texts.read_text("utf-8")
    doc = '    """Read ``{"text": ..., "id": ...}`` lines (id optional: the line number); bad lines raise InputError."""\n'
    assert doc in source
    texts.write_text(source.replace(doc, ""), "utf-8")
    docs = tmp_path / "docs"
    (docs / "reference").mkdir(parents=True)
    (docs / "index.md").write_text("# Home\n\n[gone](missing.md) and [a heading](index.md#nope)\n")
    (docs / "reference" / "corpus.md").write_text("# Corpus\n\n::: attn_plugins.corpus\n\n[x][attn_plugins.nope]\n")
    config = (ROOT / "mkdocs.yml").read_text("utf-8")
    config = re.sub(r"nav:\n(?:  .*\n)+", "nav:\n  - Home: index.md\n  - Corpus: reference/corpus.md\n", config)
    (tmp_path / "mkdocs.yml").write_text(config)
    proc = _build(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert any("function attn_plugins.corpus.texts.read_texts has no docstring" in w for w in warnings), warnings
    assert any("'missing.md'" in w and "not found" in w for w in warnings), warnings
    assert any("#nope" in w for w in warnings), warnings
    assert any("attn_plugins.nope" in w for w in warnings), warnings

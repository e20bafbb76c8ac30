"""Packaging: the version is answered without importing torch, and the license ships with the project.

The built wheel itself (metadata, vendored JavaScript, templates, licenses, the demo in a fresh virtual
environment) is checked by ``.ci/wheel``, which ``.ci/run`` runs next to the tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attn_plugins as ap

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_version_needs_no_torch() -> None:
    out = _python(
        "import sys\n"
        "from attn_plugins.cli import main\n"
        "main(['--version'])\n"
        "import attn_plugins\n"
        "print(attn_plugins.__version__, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    printed, version, torch_loaded, transformers_loaded = out.splitlines()[0], *out.splitlines()[1].split()
    assert printed == f"attn-plugins {ap.__version__}" and version == ap.__version__ != "0+unknown"
    assert (torch_loaded, transformers_loaded) == ("False", "False")


def test_public_names_still_resolve_lazily() -> None:
    out = _python(
        "import sys\nimport attn_plugins as ap\n"
        "print('torch' in sys.modules, ap.AttentionRecord.__module__, 'torch' in sys.modules)"
    )
    assert out.split() == ["False", "attn_plugins.record.record", "True"]


def test_license_is_the_apache_text_and_is_declared() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "Apache-2.0"' in pyproject and '"LICENSE"' in pyproject
    assert 'requires = ["setuptools>=77"]' in pyproject  # the SPDX string needs setuptools 77

"""Packaging: the version is answered without importing torch, the license ships with the project, and the
declarative configuration (setup.cfg beside pyproject.toml, no setup.py) names every package of the tree.

The built wheel itself (metadata, vendored JavaScript, templates, licenses, the demo in a fresh virtual
environment) is checked by ``.ci/wheel``, which ``.ci/run`` runs next to the tests.
"""

from __future__ import annotations

import configparser
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


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return cfg


def test_packaging_is_declarative() -> None:
    """setup.cfg beside pyproject.toml, no setup.py; the folder adapters/ installs as attn_adapters."""
    assert not (ROOT / "setup.py").exists()
    package_dir = dict(
        line.replace(" ", "").split("=") for line in _setup_cfg()["options"]["package_dir"].split("\n") if line.strip()
    )
    assert package_dir == {"attn_adapters": "adapters"}


def test_setup_cfg_names_every_package_of_the_tree_once() -> None:
    """The hand-kept package list (find: cannot rename adapters/) is every folder of the tree, each once."""
    listed = [line.strip() for line in _setup_cfg()["options"]["packages"].split("\n") if line.strip()]
    tree = []
    for folder, name in ((ROOT / "attn_plugins", "attn_plugins"), (ROOT / "adapters", "attn_adapters")):
        for path in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
            if "__pycache__" in path.parts:
                continue
            tree.append(".".join([name, *path.relative_to(folder).parts]))
    assert len(listed) == len(set(listed)), "a package is listed twice in setup.cfg"
    assert sorted(listed) == sorted(tree), (
        f"setup.cfg [options] packages: missing {sorted(set(tree) - set(listed))}, "
        f"not in the tree {sorted(set(listed) - set(tree))}"
    )


def test_every_data_folder_ships_its_files() -> None:
    """A folder without __init__.py (vendored JavaScript, templates) is data: setup.cfg ships all its files."""
    data = _setup_cfg()["options.package_data"]
    for folder in sorted(p for p in (ROOT / "attn_plugins").rglob("*") if p.is_dir()):
        if "__pycache__" in folder.parts or (folder / "__init__.py").exists():
            continue
        name = ".".join(["attn_plugins", *folder.relative_to(ROOT / "attn_plugins").parts])
        assert data.get(name, "").strip() == "*", f"setup.cfg [options.package_data] does not ship {name}"

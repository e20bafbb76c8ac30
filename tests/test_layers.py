"""The tree reads as the pipeline: imports run one way, and only the named layers touch shap, bertviz, adapters.

The rules are those of docs/architecture.md; every import statement of the package (function-level and
type-checking ones included) is read with ``ast`` and checked, so a new upward import fails here with its file
and line, and modules that import each other (a circle, also inside one layer) fail with the circle named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "attn_plugins"
ADAPTERS = ROOT / "adapters"

# Layer ranks: a module may import its own layer and lower ranks, never a higher one.
RANKS = {
    "errors": 0,
    "results": 0,
    "files": 0,
    "plugins": 1,
    "record": 2,
    "adapters": 3,
    "capture": 4,
    "zoo": 4.5,
    "methods": 5,
    "metrics": 6,
    "views": 7,
    "explain": 8,
    "corpus": 9,
    "bench": 10,
    "cli": 11,
    "__main__": 12,
    "__init__": 12,  # the package's lazy public names point anywhere
}
# Third-party libraries that only some layers may import.
ONLY = {"shap": {"explain", "bench"}, "bertviz": {"views"}}
# What the built-in adapters may import from the core: the adapter contract and what it is made of.
ADAPTER_CONTRACT = {"attn_plugins.adapters", "attn_plugins.record", "attn_plugins.errors", "attn_plugins.plugins"}


def layer_of(module: str) -> str:
    """The layer of a module name inside attn_plugins (``attn_plugins.capture.forward`` -> ``capture``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """Every (line, absolute module name) a file imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = package.split(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own[: len(own) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` imports the submodule x
                out += [(node.lineno, f"{name}.{a.name}" if not node.module else name) for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def test_core_imports_run_one_way() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        package = ".".join(["attn_plugins", *rel[:-1]])
        me = rel[0] if len(rel) > 1 else rel[0]
        for line, target in imports(path, package):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.startswith("attn_adapters"):
                problems.append(f"{where}: the core imports the built-in adapter {target}")
            top = target.split(".")[0]
            if top in ONLY and me not in ONLY[top]:
                problems.append(f"{where}: only {sorted(ONLY[top])} may import {top}")
            if target.startswith("attn_plugins.") and me in RANKS:
                other = layer_of(target)
                if other not in RANKS and not (PACKAGE / other).exists():
                    other = "errors"  # `from . import __version__`: a name of the package itself
                if RANKS.get(other, 99) > RANKS[me]:
                    problems.append(f"{where}: {me} imports {target}, a later layer ({other})")
    assert not problems, "\n".join(problems)


def test_built_in_adapters_depend_only_on_the_contract() -> None:
    problems = []
    for path in sorted(ADAPTERS.rglob("*.py")):
        for line, target in imports(path, "attn_adapters"):
            if target.startswith("attn_plugins") and not any(
                target == allowed or target.startswith(allowed + ".") for allowed in ADAPTER_CONTRACT
            ):
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {target}, not the adapter contract")
    assert not problems, "\n".join(problems)


def module_names() -> dict[str, Path]:
    """Every module of the core and of the built-in adapters by its import name (a package by its own name)."""
    out = {}
    for root, top in ((PACKAGE, "attn_plugins"), (ADAPTERS, "attn_adapters")):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join([top, *parts])] = path
    return out


def sibling_imports(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """``{module: {imported module of the same package: line}}``, every import statement counted.

    Function-level imports and those under ``if TYPE_CHECKING`` count too: either way the two modules
    know each other, and one of them is no longer below the other.
    """
    edges: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: list[tuple[int, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                own = package.split(".")
                base = ".".join(own[: len(own) - node.level + 1] + ([node.module] if node.module else []))
                base = base if node.level else node.module
                for alias in node.names:
                    # `from pkg import mod` imports the module pkg.mod; `from pkg import name` the package
                    found.append((node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base))
        mine = edges.setdefault(name, {})
        for line, target in found:
            if target == name or target not in modules:
                continue
            target_package = target if modules[target].name == "__init__.py" else target.rsplit(".", 1)[0]
            # Siblings, and a package with its own modules (a module importing its package's __init__).
            if target_package == package or target == package:
                mine.setdefault(target, line)
    return edges


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import circles: strongly connected groups of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def test_modules_of_one_package_import_one_way() -> None:
    """No import circle between the modules of one package (function-level imports included)."""
    modules = module_names()
    edges = sibling_imports(modules)
    problems = []
    for group in circles(edges):
        links = [
            f"{modules[a].relative_to(ROOT)}:{line} imports {b}"
            for a in group
            for b, line in edges[a].items()
            if b in group
        ]
        problems.append("import circle between " + ", ".join(group) + ": " + "; ".join(links))
    assert not problems, "\n".join(problems)


def test_the_circle_rule_finds_every_module_of_a_circle() -> None:
    edges = {"p.a": {"p.b": 3}, "p.b": {"p.c": 1}, "p.c": {"p.a": 9}, "p.d": {"p.a": 2}}
    assert circles(edges) == [["p.a", "p.b", "p.c"]]
    assert circles({"p.a": {"p.b": 1}, "p.b": {}}) == []


@pytest.mark.parametrize("layer", sorted(set(RANKS) - {"__init__", "__main__"}))
def test_every_layer_named_here_exists(layer: str) -> None:
    assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file()


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from ..explain import explain\nimport shap\n")
    found = imports(bad, "attn_plugins.record")
    assert found == [(1, "attn_plugins.explain"), (2, "shap")]
    assert RANKS[layer_of(found[0][1])] > RANKS["record"]


def test_every_result_object_follows_the_result_contract() -> None:
    """Result classes print as tables and convert to dicts and DataFrames (see attn_plugins/results.py)."""
    import numpy as np
    import torch

    import attn_plugins as ap
    from attn_plugins.metrics import diagnose, disagreement
    from attn_plugins.metrics.faithfulness import AOPC, Curve
    from attn_plugins.views import head_summary

    att = torch.softmax(torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0)), -1)
    rec = ap.AttentionRecord(tokens=["[CLS]", "a", "[SEP]"], attentions={"self": att}, special_tokens_mask=[1, 0, 1])
    results = [
        ap.plugins(),
        diagnose(rec),
        disagreement([0.1, 0.5, 0.2], [0.2, 0.6, 0.1]),
        head_summary(rec),
        AOPC(0.5, (0.1, 0.2), (0.4, 0.6), 0.9),
        Curve(np.array([0.0, 1.0]), np.array([0.9, 0.1]), 0.5),
    ]
    for result in results:
        data = result.to_dict()
        assert isinstance(data, dict) and data, type(result)
        frame = result.to_frame()
        assert len(frame) == len(result.rows()) > 0, type(result)
        assert str(result).strip(), type(result)
        result.to_json()  # strict JSON: no NaN
